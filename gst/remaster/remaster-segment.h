/* remaster-segment.h — cutting the video into segments at keyframes.
 *
 * Boundary k is the first keyframe at or after t0 + k·S (t0: the first
 * frame's time, S: --segment-seconds).  Segments own the frames whose
 * presentation time lies in [boundary_k, boundary_k+1): they are contiguous
 * and disjoint by construction, so whatever a decoder does around a cut
 * (open GOPs, leading B-frames, reordering), selecting decoded frames by
 * PTS range can neither lose nor duplicate a frame. */
#ifndef REMASTER_SEGMENT_H
#define REMASTER_SEGMENT_H

#include "remaster-manifest.h"
#include "remaster-probe.h"

G_BEGIN_DECLS

/* Fills `segments` (RemasterSegment*, state pending) from the probe's
 * packets; fails on duplicate timestamps, no keyframe or seconds <= 0.
 * *skipped: frames shown before the first keyframe, which cannot be
 * decoded and are left out (segment 0 then starts at that keyframe). */
gboolean remaster_segment_plan (const RemasterProbe * probe,
    gdouble seconds, GPtrArray * segments, guint64 * skipped,
    GError ** error);

/* Does the segment own a frame at `pts`? */
gboolean remaster_segment_contains (const RemasterSegment * segment,
    GstClockTime pts);

G_END_DECLS

#endif
