/* remaster-join.h — the final step: the segment files' video, back to back
 * and untouched (no re-encode), muxed with every audio and subtitle stream
 * of the input copied packet for packet, plus its chapters and tags. */
#ifndef REMASTER_JOIN_H
#define REMASTER_JOIN_H

#include <glib.h>

G_BEGIN_DECLS

typedef struct
{
  guint64 frames;               /* video frames written */
  guint64 bytes;                /* size of the output file */
  gint width;                   /* of the output video */
  gint height;
  gdouble seconds;              /* filled in by the caller */
} RemasterJoinResult;

/* Whether the output's muxer takes every audio and subtitle stream of the
 * input (GstCaps of each, as the probe found them), by the rule the join
 * links them with: checked before any frame is upscaled, so that a stream
 * the container cannot store fails the job at once, not days later at the
 * join. */
gboolean remaster_join_check_streams (const gchar * output,
    const GPtrArray * audio_caps, const GPtrArray * subtitle_caps,
    GError ** error);

/* Every segment must be done.  Writes the manifest's output path
 * atomically (temporary name, rename) and marks the manifest joined. */
gboolean remaster_join_run (const gchar * workdir, RemasterJoinResult * result,
    GError ** error);

G_END_DECLS

#endif
