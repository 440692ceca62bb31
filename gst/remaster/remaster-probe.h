/* remaster-probe.h — what the input holds: its streams and, for the video,
 * every packet's presentation time and keyframe flag.
 *
 * The probe demuxes (and parses) the whole input without decoding, which is
 * I/O bound: the packet list is what lets the segment planner cut at
 * keyframes and know, before anything is decoded, how many frames each
 * segment must produce. */
#ifndef REMASTER_PROBE_H
#define REMASTER_PROBE_H

#include <gst/gst.h>

G_BEGIN_DECLS

typedef struct
{
  GstClockTime pts;
  gboolean keyframe;
} RemasterPacket;

typedef struct
{
  GstCaps *video_caps;          /* of the first video stream, as demuxed */
  GArray *packets;              /* RemasterPacket, in decode order */
  GstClockTime end;             /* end of the last video frame */
  guint n_audio;                /* streams the join copies */
  guint n_subtitle;
  GPtrArray *audio_caps;        /* GstCaps of each, in pad order */
  GPtrArray *subtitle_caps;
  guint n_ignored;              /* further video streams, data streams */
  gchar *demuxer;               /* factory that demuxed the video, if any */
} RemasterProbe;

RemasterProbe *remaster_probe_run (const gchar * path, GError ** error);
void remaster_probe_free (RemasterProbe * probe);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (RemasterProbe, remaster_probe_free)

G_END_DECLS

#endif
