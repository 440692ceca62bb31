/* remaster-check.c — compare a remaster with its input, packet by packet. */
#include "remaster-check.h"
#include "remaster-mkvpatch.h"
#include "remaster-error.h"
#include "remaster-pipeline.h"
#include "remaster-progress.h"

#include <gst/gst.h>

/* Matroska stores times in milliseconds (its default TimecodeScale), so a
 * time read back from it may be off by up to half a millisecond from the
 * input's exact one; that much is rounding, not a change. */
#define TIME_TOLERANCE (GST_MSECOND / 2 + GST_USECOND)

static gboolean
same_time (GstClockTime a, GstClockTime b)
{
  if (!GST_CLOCK_TIME_IS_VALID (a) || !GST_CLOCK_TIME_IS_VALID (b))
    return a == b;
  return (a > b ? a - b : b - a) <= TIME_TOLERANCE;
}

typedef struct
{
  GstClockTime pts;
  GstClockTime duration;
  guint32 hash;                 /* FNV-1a of the bytes */
  gsize size;
  gboolean key;
} Packet;

typedef struct
{
  RemasterStreamKind kind;
  gchar *caps;
  GArray *packets;              /* Packet */
} Stream;

typedef struct
{
  GMutex lock;
  GstElement *pipeline;
  GPtrArray *streams;           /* Stream*, in pad order */
  guint chapters;               /* TOC entries, all levels */
  GstTagList *tags;             /* global */
} Listing;

static guint32
fnv1a (const guint8 * data, gsize n)
{
  guint32 h = 2166136261u;
  for (gsize i = 0; i < n; i++)
    h = (h ^ data[i]) * 16777619u;
  return h;
}

static guint
count_entries (GList * entries)
{
  guint n = 0;
  for (GList * l = entries; l; l = l->next)
    n += 1 + count_entries (gst_toc_entry_get_sub_entries (l->data));
  return n;
}

static void
record (Stream * s, GstBuffer * buf)
{
  if (GST_BUFFER_FLAG_IS_SET (buf, GST_BUFFER_FLAG_HEADER))
    return;
  GstMapInfo map;
  Packet p = { GST_BUFFER_PTS (buf), GST_BUFFER_DURATION (buf), 0, 0,
    !GST_BUFFER_FLAG_IS_SET (buf, GST_BUFFER_FLAG_DELTA_UNIT)
  };
  if (gst_buffer_map (buf, &map, GST_MAP_READ)) {
    p.hash = fnv1a (map.data, map.size);
    p.size = map.size;
    gst_buffer_unmap (buf, &map);
  }
  g_array_append_val (s->packets, p);
}

typedef struct
{
  Listing *listing;
  Stream *stream;
} ProbeData;

static GstPadProbeReturn
on_data (GstPad * pad, GstPadProbeInfo * info, gpointer user_data)
{
  ProbeData *d = user_data;
  if (info->type & GST_PAD_PROBE_TYPE_BUFFER) {
    record (d->stream, GST_PAD_PROBE_INFO_BUFFER (info));
    return GST_PAD_PROBE_OK;
  }
  GstEvent *ev = GST_PAD_PROBE_INFO_EVENT (info);
  g_mutex_lock (&d->listing->lock);
  if (GST_EVENT_TYPE (ev) == GST_EVENT_TOC) {
    GstToc *toc;
    gst_event_parse_toc (ev, &toc, NULL);
    d->listing->chapters = MAX (d->listing->chapters,
        count_entries (gst_toc_get_entries (toc)));
    gst_toc_unref (toc);
  } else if (GST_EVENT_TYPE (ev) == GST_EVENT_TAG) {
    GstTagList *tags;
    gst_event_parse_tag (ev, &tags);
    if (gst_tag_list_get_scope (tags) == GST_TAG_SCOPE_GLOBAL) {
      GstTagList *m = gst_tag_list_merge (d->listing->tags, tags,
          GST_TAG_MERGE_REPLACE);
      if (d->listing->tags)
        gst_tag_list_unref (d->listing->tags);
      d->listing->tags = m;
    }
  }
  g_mutex_unlock (&d->listing->lock);
  return GST_PAD_PROBE_OK;
}

static void
on_pad (GstElement * parsebin, GstPad * pad, gpointer user_data)
{
  Listing *l = user_data;
  Stream *s = g_new0 (Stream, 1);
  GstCaps *caps = gst_pad_get_current_caps (pad);
  s->kind = remaster_stream_kind (caps);
  s->caps = caps ? gst_caps_to_string (caps) : g_strdup ("?");
  if (caps)
    gst_caps_unref (caps);
  s->packets = g_array_new (FALSE, FALSE, sizeof (Packet));
  g_mutex_lock (&l->lock);
  g_ptr_array_add (l->streams, s);
  g_mutex_unlock (&l->lock);
  ProbeData *d = g_new (ProbeData, 1);
  d->listing = l;
  d->stream = s;
  gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER |
      GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM, on_data, d, g_free);
  remaster_link_to_fakesink (GST_BIN (l->pipeline), pad);
}

static void
stream_free (gpointer p)
{
  Stream *s = p;
  g_free (s->caps);
  g_array_unref (s->packets);
  g_free (s);
}

static void
listing_clear (Listing * l)
{
  if (l->streams)
    g_ptr_array_unref (l->streams);
  if (l->tags)
    gst_tag_list_unref (l->tags);
  g_mutex_clear (&l->lock);
}

static gboolean
list_file (const gchar * path, Listing * l, GError ** error)
{
  g_mutex_init (&l->lock);
  l->streams = g_ptr_array_new_with_free_func (stream_free);
  if (!g_file_test (path, G_FILE_TEST_IS_REGULAR)) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_INPUT,
        "%s does not exist", path);
    return FALSE;
  }
  g_autoptr (GstElement) p = gst_pipeline_new ("check");
  GstElement *src = gst_element_factory_make ("filesrc", NULL);
  GstElement *parse = remaster_make_demuxbin (error);
  if (!parse) {
    gst_object_unref (src);
    return FALSE;
  }
  g_object_set (src, "location", path, NULL);
  gst_bin_add_many (GST_BIN (p), src, parse, NULL);
  gst_element_link (src, parse);
  l->pipeline = p;
  g_signal_connect (parse, "pad-added", G_CALLBACK (on_pad), l);
  g_autofree gchar *what = g_strdup_printf ("Reading %s", path);
  return remaster_run_to_eos (p, what, error);
}

static gint
compare_time (gconstpointer a, gconstpointer b)
{
  GstClockTime x = *(const GstClockTime *) a, y = *(const GstClockTime *) b;
  return x < y ? -1 : x > y;
}

static Stream *
nth_of_kind (Listing * l, RemasterStreamKind kind, guint n)
{
  for (guint i = 0; i < l->streams->len; i++) {
    Stream *s = g_ptr_array_index (l->streams, i);
    if (s->kind == kind && n-- == 0)
      return s;
  }
  return NULL;
}

static void
differ (GPtrArray * diffs, const gchar * fmt, ...) G_GNUC_PRINTF (2, 3);

static void
differ (GPtrArray * diffs, const gchar * fmt, ...)
{
  va_list args;
  va_start (args, fmt);
  g_ptr_array_add (diffs, g_strdup_vprintf (fmt, args));
  va_end (args);
}

static void
compare_video (Stream * a, Stream * b, GPtrArray * diffs, guint64 * frames,
    guint64 * skipped)
{
  g_autoptr (GArray) ta = g_array_new (FALSE, FALSE, sizeof (GstClockTime));
  g_autoptr (GArray) tb = g_array_new (FALSE, FALSE, sizeof (GstClockTime));
  /* frames shown before the input's first keyframe cannot be decoded:
   * a remaster leaves them out (and says so) */
  GstClockTime first_key = GST_CLOCK_TIME_NONE;
  for (guint i = 0; i < a->packets->len; i++) {
    Packet *p = &g_array_index (a->packets, Packet, i);
    if (p->key && GST_CLOCK_TIME_IS_VALID (p->pts)) {
      first_key = p->pts;
      break;
    }
  }
  for (guint i = 0; i < a->packets->len; i++) {
    GstClockTime t = g_array_index (a->packets, Packet, i).pts;
    if (GST_CLOCK_TIME_IS_VALID (first_key) && GST_CLOCK_TIME_IS_VALID (t)
        && t < first_key)
      (*skipped)++;
    else
      g_array_append_val (ta, t);
  }
  for (guint i = 0; i < b->packets->len; i++)
    g_array_append_val (tb, g_array_index (b->packets, Packet, i).pts);
  g_array_sort (ta, compare_time);
  g_array_sort (tb, compare_time);
  *frames = tb->len;
  if (ta->len != tb->len)
    differ (diffs, "video: %u frames in the input, %u in the output",
        ta->len, tb->len);
  guint bad = 0;
  for (guint i = 0; i < MIN (ta->len, tb->len); i++) {
    GstClockTime x = g_array_index (ta, GstClockTime, i);
    GstClockTime y = g_array_index (tb, GstClockTime, i);
    if (!same_time (x, y) && bad++ < 5)
      differ (diffs, "video frame %u: at %" GST_TIME_FORMAT " in the input, %"
          GST_TIME_FORMAT " in the output", i, GST_TIME_ARGS (x),
          GST_TIME_ARGS (y));
  }
  if (bad > 5)
    differ (diffs, "video: %u frames at different times in all", bad);
}

static void
compare_packets (const gchar * what, guint n, Stream * a, Stream * b,
    GPtrArray * diffs)
{
  if (a->packets->len != b->packets->len)
    differ (diffs, "%s %u: %u packets in the input, %u in the output", what,
        n, a->packets->len, b->packets->len);
  guint bad = 0;
  for (guint i = 0; i < MIN (a->packets->len, b->packets->len); i++) {
    Packet *x = &g_array_index (a->packets, Packet, i);
    Packet *y = &g_array_index (b->packets, Packet, i);
    gboolean time_ok = same_time (x->pts, y->pts);
    if ((!time_ok || x->size != y->size || x->hash != y->hash) && bad++ < 5)
      differ (diffs, "%s %u packet %u: %s differ (%" GST_TIME_FORMAT
          ", %" G_GSIZE_FORMAT " bytes vs %" GST_TIME_FORMAT ", %"
          G_GSIZE_FORMAT " bytes)", what, n, i, !time_ok ? "times" :
          "bytes", GST_TIME_ARGS (x->pts), x->size, GST_TIME_ARGS (y->pts),
          y->size);
  }
  if (bad > 5)
    differ (diffs, "%s %u: %u packets differ in all", what, n, bad);
}

/* Samples (attachments, images) by their bytes and info; GStreamer
 * compares them by pointer. */
static gboolean
same_value (const GValue * a, const GValue * b)
{
  if (G_VALUE_HOLDS (a, GST_TYPE_SAMPLE)
      && G_VALUE_HOLDS (b, GST_TYPE_SAMPLE)) {
    GstSample *sa = gst_value_get_sample (a), *sb = gst_value_get_sample (b);
    GstBuffer *ba = gst_sample_get_buffer (sa);
    GstBuffer *bb = gst_sample_get_buffer (sb);
    const GstStructure *ia = gst_sample_get_info (sa);
    const GstStructure *ib = gst_sample_get_info (sb);
    gsize n = ba ? gst_buffer_get_size (ba) : 0;
    GstMapInfo map;
    gboolean same = ba && bb && n == gst_buffer_get_size (bb)
        && (!ia || (ib && gst_structure_is_equal (ia, ib)));
    if (same && gst_buffer_map (ba, &map, GST_MAP_READ)) {
      same = gst_buffer_memcmp (bb, 0, map.data, map.size) == 0;
      gst_buffer_unmap (ba, &map);
    }
    return same;
  }
  return gst_value_compare (a, b) == GST_VALUE_EQUAL;
}

/* A value for a message: a sample by its name and size, not its bytes. */
static gchar *
describe_value (const GValue * v)
{
  if (G_VALUE_HOLDS (v, GST_TYPE_SAMPLE)) {
    GstSample *sample = gst_value_get_sample (v);
    GstBuffer *buf = gst_sample_get_buffer (sample);
    const GstStructure *info = gst_sample_get_info (sample);
    const gchar *name = info ? gst_structure_get_string (info, "filename") :
        NULL;
    return g_strdup_printf ("%s, %" G_GSIZE_FORMAT " bytes", name ? name :
        "a sample", buf ? gst_buffer_get_size (buf) : 0);
  }
  return gst_value_serialize (v);
}

static void
compare_tags (Listing * a, Listing * b, GPtrArray * diffs)
{
  if (!a->tags)
    return;
  /* Every global tag of the input must be there; the muxers add their
   * own (encoder, container), which is fine. */
  for (gint i = 0; i < gst_tag_list_n_tags (a->tags); i++) {
    const gchar *name = gst_tag_list_nth_tag_name (a->tags, i);
    if (g_str_equal (name, GST_TAG_ENCODER)
        || g_str_equal (name, GST_TAG_CONTAINER_FORMAT)
        || g_str_equal (name, GST_TAG_APPLICATION_NAME)
        || g_str_equal (name, GST_TAG_DATE_TIME))
      continue;
    /* every value, in any order: extended-comment holds one "NAME=value"
     * per free-form Matroska tag, attachment one file each */
    guint na = gst_tag_list_get_tag_size (a->tags, name);
    guint nb = b->tags ? gst_tag_list_get_tag_size (b->tags, name) : 0;
    for (guint k = 0; k < na; k++) {
      const GValue *va = gst_tag_list_get_value_index (a->tags, name, k);
      gboolean found = FALSE;
      for (guint m = 0; m < nb && !found; m++)
        found = same_value (va, gst_tag_list_get_value_index (b->tags, name,
                m));
      if (!found) {
        g_autofree gchar *s = describe_value (va);
        differ (diffs, "tag %s (%s) is missing or different", name, s);
      }
    }
  }
}

/* Track flags (default, forced, …) of a Matroska input, track by track of
 * each type: nothing to compare for other containers. */
static void
compare_track_flags (const gchar * input, const gchar * output,
    GPtrArray * diffs)
{
  g_auto (GStrv) a = remaster_mkv_track_flags (input);
  g_auto (GStrv) b = remaster_mkv_track_flags (output);
  if (!a)
    return;
  static const gchar *types[] = { "video", "audio", "subtitle" };
  for (guint t = 0; t < G_N_ELEMENTS (types); t++) {
    guint ia = 0, ib = 0;
    for (guint n = 0;; n++) {
      /* the n-th track of this type in each file */
      while (a[ia] && !g_str_has_prefix (a[ia], types[t]))
        ia++;
      while (b && b[ib] && !g_str_has_prefix (b[ib], types[t]))
        ib++;
      if (!a[ia])
        break;
      if (!b || !b[ib] || g_strcmp0 (a[ia], b[ib]) != 0)
        differ (diffs, "%s track %u: flags \"%s\" in the input, \"%s\" in "
            "the output", types[t], n, a[ia] + strlen (types[t]),
            b && b[ib] ? b[ib] + strlen (types[t]) : " (none)");
      ia++;
      if (b && b[ib])
        ib++;
    }
  }
}

gboolean
remaster_check_files (const gchar * input, const gchar * output,
    gboolean json, GError ** error)
{
  Listing a = { 0 }, b = { 0 };
  gboolean ok = list_file (input, &a, error) && list_file (output, &b, error);
  if (!ok) {
    listing_clear (&a);
    listing_clear (&b);
    return FALSE;
  }
  g_autoptr (GPtrArray) diffs = g_ptr_array_new_with_free_func (g_free);
  guint64 frames = 0, skipped = 0;
  Stream *va = nth_of_kind (&a, REMASTER_STREAM_VIDEO, 0);
  Stream *vb = nth_of_kind (&b, REMASTER_STREAM_VIDEO, 0);
  if (!va || !vb)
    differ (diffs, "no video stream in the %s", va ? "output" : "input");
  else
    compare_video (va, vb, diffs, &frames, &skipped);
  guint n_audio = 0, n_sub = 0;
  for (RemasterStreamKind k = REMASTER_STREAM_AUDIO;
      k <= REMASTER_STREAM_SUBTITLE; k++) {
    const gchar *what = k == REMASTER_STREAM_AUDIO ? "audio" : "subtitle";
    for (guint n = 0;; n++) {
      Stream *x = nth_of_kind (&a, k, n), *y = nth_of_kind (&b, k, n);
      if (!x && !y)
        break;
      if (!x || !y) {
        differ (diffs, "%s stream %u only in the %s", what, n,
            x ? "input" : "output");
        continue;
      }
      compare_packets (what, n, x, y, diffs);
      *(k == REMASTER_STREAM_AUDIO ? &n_audio : &n_sub) += 1;
    }
  }
  if (a.chapters != b.chapters)
    differ (diffs, "chapters: %u in the input, %u in the output", a.chapters,
        b.chapters);
  compare_tags (&a, &b, diffs);
  compare_track_flags (input, output, diffs);

  if (json) {
    GString *list = g_string_new ("[");
    for (guint i = 0; i < diffs->len; i++) {
      g_autofree gchar *q = remaster_json_quote (diffs->pdata[i]);
      g_string_append_printf (list, "%s%s", i ? "," : "", q);
    }
    g_string_append_c (list, ']');
    g_print ("{\"event\":\"check\",\"ok\":%s,\"video-frames\":%"
        G_GUINT64_FORMAT ",\"audio-streams\":%u,\"subtitle-streams\":%u,"
        "\"chapters\":%u,\"skipped-undecodable\":%" G_GUINT64_FORMAT ","
        "\"differences\":%s}\n", diffs->len ? "false" : "true", frames,
        n_audio, n_sub, b.chapters, skipped, list->str);
    g_string_free (list, TRUE);
  } else {
    for (guint i = 0; i < diffs->len; i++)
      g_print ("DIFFERENT: %s\n", (gchar *) diffs->pdata[i]);
    if (!diffs->len && skipped)
      g_print ("NOTE: the input's %" G_GUINT64_FORMAT " frames before its "
          "first keyframe are undecodable and not expected\n", skipped);
    if (!diffs->len)
      g_print ("OK: %" G_GUINT64_FORMAT " video frames at the input's times "
          "(to 0.5 ms, Matroska's resolution), "
          "%u audio and %u subtitle streams identical, %u chapters\n",
          frames, n_audio, n_sub, b.chapters);
  }
  listing_clear (&a);
  listing_clear (&b);
  return diffs->len == 0;
}
