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

/* Every segment must be done.  Writes the manifest's output path
 * atomically (temporary name, rename) and marks the manifest joined. */
gboolean remaster_join_run (const gchar * workdir, RemasterJoinResult * result,
    GError ** error);

G_END_DECLS

#endif
