/* remaster-segment.c — keyframe-aligned, PTS-contiguous segments. */
#include "remaster-segment.h"
#include "remaster-error.h"

#include <math.h>

static gint
compare_time (gconstpointer a, gconstpointer b)
{
  GstClockTime x = *(const GstClockTime *) a, y = *(const GstClockTime *) b;
  return x < y ? -1 : x > y;
}

/* Index of the first element >= t in a sorted array. */
static guint
lower_bound (const GArray * sorted, GstClockTime t)
{
  guint lo = 0, hi = sorted->len;
  while (lo < hi) {
    guint mid = lo + (hi - lo) / 2;
    if (g_array_index (sorted, GstClockTime, mid) < t)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

gboolean
remaster_segment_contains (const RemasterSegment * s, GstClockTime pts)
{
  if (GST_CLOCK_TIME_IS_VALID (s->start) && pts < s->start)
    return FALSE;
  if (GST_CLOCK_TIME_IS_VALID (s->end) && pts >= s->end)
    return FALSE;
  return TRUE;
}

gboolean
remaster_segment_plan (const RemasterProbe * probe, gdouble seconds,
    GPtrArray * segments, guint64 * skipped, GError ** error)
{
  if (!(seconds > 0) || !isfinite (seconds)) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_ARGS,
        "segment length must be a positive number of seconds");
    return FALSE;
  }
  guint n = probe->packets->len;
  g_autoptr (GArray) pts = g_array_sized_new (FALSE, FALSE,
      sizeof (GstClockTime), n);
  g_autoptr (GArray) keys = g_array_new (FALSE, FALSE, sizeof (GstClockTime));
  for (guint i = 0; i < n; i++) {
    const RemasterPacket *p = &g_array_index (probe->packets,
        RemasterPacket, i);
    g_array_append_val (pts, p->pts);
    if (p->keyframe)
      g_array_append_val (keys, p->pts);
  }
  g_array_sort (pts, compare_time);
  g_array_sort (keys, compare_time);
  for (guint i = 1; i < n; i++)
    if (g_array_index (pts, GstClockTime, i) ==
        g_array_index (pts, GstClockTime, i - 1)) {
      /* Two frames at one time cannot be told apart after decoding. */
      g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_INPUT,
          "two video frames share the timestamp %" GST_TIME_FORMAT,
          GST_TIME_ARGS (g_array_index (pts, GstClockTime, i)));
      return FALSE;
    }

  if (keys->len == 0) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_INPUT,
        "the video has no keyframe");
    return FALSE;
  }
  /* Frames shown before the first keyframe (a file cut out of a longer
   * stream) reference pictures that are not in the file: no decoder can
   * produce them.  They are left out of the job, and said so. */
  GstClockTime first_key = g_array_index (keys, GstClockTime, 0);
  guint first = lower_bound (pts, first_key);
  *skipped = first;
  GstClockTime t0 = first_key;
  GstClockTime last = g_array_index (pts, GstClockTime, n - 1);
  g_autoptr (GArray) bounds = g_array_new (FALSE, FALSE,
      sizeof (GstClockTime));
  gdouble step = seconds * GST_SECOND;
  for (guint64 k = 1;; k++) {
    gdouble target_f = (gdouble) t0 + (gdouble) k * step;
    if (target_f > (gdouble) last)
      break;
    GstClockTime target = (GstClockTime) llround (target_f);
    guint ki = lower_bound (keys, target);
    if (ki == keys->len)
      break;
    GstClockTime b = g_array_index (keys, GstClockTime, ki);
    if (b <= t0)
      continue;
    g_array_append_val (bounds, b);
    /* A keyframe far past the target also serves the next targets. */
    guint64 k_next = (guint64) floor (((gdouble) b - (gdouble) t0) / step);
    if (k_next > k)
      k = k_next;
  }

  for (guint i = 0; i <= bounds->len; i++) {
    RemasterSegment *s = g_new0 (RemasterSegment, 1);
    s->index = i;
    s->state = REMASTER_SEGMENT_PENDING;
    s->start = i > 0 ? g_array_index (bounds, GstClockTime, i - 1) :
        first > 0 ? first_key : GST_CLOCK_TIME_NONE;
    s->end = i == bounds->len ? GST_CLOCK_TIME_NONE :
        g_array_index (bounds, GstClockTime, i);
    guint from = i == 0 ? first : lower_bound (pts, s->start);
    guint past = i == bounds->len ? n : lower_bound (pts, s->end);
    s->frames = past - from;
    g_ptr_array_add (segments, s);
  }
  return TRUE;
}
