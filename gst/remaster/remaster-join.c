/* remaster-join.c — concatenate the segments and mux the other streams.
 *
 *   appsrc (video packets of seg-00000.mkv, seg-00001.mkv, ...) ─┐
 *   filesrc IN ! parsebin ─ audio ─ queue ───────────────────────┤ matroskamux
 *                         ├ subtitles ─ queue ───────────────────┘ ! filesink
 *                         └ video ─ fakesink (only its chapters and tags)
 *
 * Segment files carry the input's own timestamps, so packets are pushed
 * as they are: no offsets, variable frame rates and gaps kept.  The video
 * is fed by a thread that demuxes one segment after the other; it starts
 * only once parsebin has exposed every stream of the input (a muxer cannot
 * take new tracks once its header is written) and the input's chapters
 * and tags have been seen. */
#include "remaster-join.h"
#include "remaster-mkvpatch.h"
#include "remaster-error.h"
#include "remaster-fs.h"
#include "remaster-manifest.h"
#include "remaster-pipeline.h"
#include "remaster-subtitle.h"

#include <gst/app/app.h>
#include <gst/pbutils/pbutils.h>
#include <glib/gstdio.h>
#include <string.h>

typedef struct
{
  const gchar *workdir;
  RemasterManifest *manifest;
  GstElement *pipeline;
  GstElement *appsrc;
  GstElement *mux;

  GMutex lock;
  GCond cond;
  guint n_copied;               /* audio + subtitle streams linked */
  gboolean video_seen;          /* the input's video: first buffer or EOS */
  gboolean stopping;
  gboolean have_video_pad;
  GstToc *toc;
  GstTagList *global_tags;
  GstTagList *video_tags;
  gchar *link_error;            /* a stream the muxer refused */

  guint64 frames;
  gint width;
  gint height;
} Join;

/* ---- the input side ---- */

static GstPadProbeReturn
on_input_video (GstPad * pad, GstPadProbeInfo * info, gpointer user_data)
{
  Join *j = user_data;
  gboolean seen = FALSE;
  if (info->type & (GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_BUFFER_LIST)) {
    seen = TRUE;
  } else {
    GstEvent *ev = GST_PAD_PROBE_INFO_EVENT (info);
    g_mutex_lock (&j->lock);
    if (GST_EVENT_TYPE (ev) == GST_EVENT_TOC) {
      GstToc *toc = NULL;
      gst_event_parse_toc (ev, &toc, NULL);
      if (j->toc)
        gst_toc_unref (j->toc);
      j->toc = toc;
    } else if (GST_EVENT_TYPE (ev) == GST_EVENT_TAG) {
      GstTagList *tags = NULL;
      gst_event_parse_tag (ev, &tags);
      GstTagList **into = gst_tag_list_get_scope (tags) ==
          GST_TAG_SCOPE_GLOBAL ? &j->global_tags : &j->video_tags;
      GstTagList *merged = gst_tag_list_merge (*into, tags,
          GST_TAG_MERGE_REPLACE);
      if (*into)
        gst_tag_list_unref (*into);
      *into = merged;
    } else if (GST_EVENT_TYPE (ev) == GST_EVENT_EOS) {
      seen = TRUE;
    }
    g_mutex_unlock (&j->lock);
  }
  if (!seen)
    return GST_PAD_PROBE_OK;
  GST_DEBUG_OBJECT (pad, "input video started");
  g_mutex_lock (&j->lock);
  j->video_seen = TRUE;
  g_cond_broadcast (&j->cond);
  g_mutex_unlock (&j->lock);
  return GST_PAD_PROBE_REMOVE;
}

#define QUEUE_TIME (10 * GST_SECOND)

/* The demuxer feeds all the copied streams from one thread.  When a
 * copied stream's queue is full while the video is also waiting in full
 * (appsrc at its limit), the muxer can only be waiting for a stream that
 * has nothing queued — a subtitle track silent for longer than the queue,
 * from a demuxer that sends no gap events for it — and blocking the
 * demuxer would deadlock: grow the full queue instead, as decodebin's
 * multiqueue does. */
static void
on_queue_full (GstElement * queue, gpointer user_data)
{
  Join *j = user_data;
  guint64 video = 0, video_max = 0, limit = 0;
  g_object_get (j->appsrc, "current-level-buffers", &video, "max-buffers",
      &video_max, NULL);
  if (video < video_max)
    return;                     /* the video is behind: wait for it */
  g_object_get (queue, "max-size-time", &limit, NULL);
  GST_INFO_OBJECT (queue, "muxer waits for a sparse stream: growing to %"
      GST_TIME_FORMAT, GST_TIME_ARGS (limit + QUEUE_TIME));
  g_object_set (queue, "max-size-time", limit + QUEUE_TIME, NULL);
}

static const gchar *
muxer_for (const gchar * output)
{
  g_autofree gchar *lower = g_ascii_strdown (output, -1);
  return g_str_has_suffix (lower, ".webm") ? "webmmux" : "matroskamux";
}

/* The join's rule: text with Pango markup goes through a converter to
 * plain UTF-8; everything else must match the muxer's template as it is. */
static gboolean
stream_fits (const GstCaps * caps, GstCaps * accepted)
{
  return !caps || remaster_subtitle_is_markup (caps)
      || gst_caps_can_intersect (caps, accepted);
}

static gboolean
link_to_mux (Join * j, GstPad * pad, const gchar * template_name)
{
  GstPad *muxpad = gst_element_request_pad_simple (j->mux, template_name);
  if (!muxpad)
    return FALSE;
  g_autoptr (GstCaps) caps = gst_pad_get_current_caps (pad);
  g_autoptr (GstCaps) accepted = gst_pad_get_pad_template_caps (muxpad);
  GST_DEBUG_OBJECT (pad, "%" GST_PTR_FORMAT " into %" GST_PTR_FORMAT, caps,
      accepted);
  gboolean markup = remaster_subtitle_is_markup (caps);
  if (!stream_fits (caps, accepted)) {
    gst_element_release_request_pad (j->mux, muxpad);
    gst_object_unref (muxpad);
    return FALSE;
  }
  GstElement *queue = gst_element_factory_make ("queue", NULL);
  /* Bounded in time, so that the input's demuxer (which reads at disk
   * speed) cannot pile up a film's worth of audio while the muxer waits
   * for the video; on_queue_full() lets a queue grow in the one case
   * where waiting would deadlock. */
  g_object_set (queue, "max-size-buffers", 0, "max-size-bytes", 0,
      "max-size-time", QUEUE_TIME, NULL);
  g_signal_connect (queue, "overrun", G_CALLBACK (on_queue_full), j);
  gst_bin_add (GST_BIN (j->pipeline), queue);
  GstElement *last = queue;
  if (markup) {
    GstElement *plain = remaster_subtitle_plain_text ();
    if (!plain) {
      gst_element_release_request_pad (j->mux, muxpad);
      gst_object_unref (muxpad);
      return FALSE;
    }
    gst_bin_add (GST_BIN (j->pipeline), plain);
    gst_element_link (queue, plain);
    gst_element_sync_state_with_parent (plain);
    last = plain;
  }
  g_autoptr (GstPad) qsink = gst_element_get_static_pad (queue, "sink");
  g_autoptr (GstPad) lsrc = gst_element_get_static_pad (last, "src");
  gboolean ok = gst_pad_link (lsrc, muxpad) == GST_PAD_LINK_OK
      && gst_pad_link (pad, qsink) == GST_PAD_LINK_OK;
  gst_object_unref (muxpad);
  gst_element_sync_state_with_parent (queue);
  if (ok) {
    g_mutex_lock (&j->lock);
    j->n_copied++;
    g_mutex_unlock (&j->lock);
  }
  return ok;
}

static void
on_input_pad (GstElement * parsebin, GstPad * pad, gpointer user_data)
{
  Join *j = user_data;
  RemasterStreamKind kind = remaster_pad_stream_kind (pad);
  const gchar *tmpl = kind == REMASTER_STREAM_AUDIO ? "audio_%u" :
      kind == REMASTER_STREAM_SUBTITLE ? "subtitle_%u" : NULL;
  GST_DEBUG_OBJECT (pad, "input stream of kind %d", kind);

  if (kind == REMASTER_STREAM_VIDEO) {
    g_mutex_lock (&j->lock);
    gboolean first = !j->have_video_pad;
    j->have_video_pad = TRUE;
    g_mutex_unlock (&j->lock);
    if (first)
      gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM |
          GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_BUFFER_LIST,
          on_input_video, j, NULL);
  }
  if (tmpl && !link_to_mux (j, pad, tmpl)) {
    g_autoptr (GstCaps) caps = gst_pad_get_current_caps (pad);
    g_autofree gchar *s = caps ? gst_caps_to_string (caps) : g_strdup ("?");
    g_mutex_lock (&j->lock);
    if (!j->link_error)
      j->link_error = g_strdup_printf ("%s cannot store the input's %s "
          "stream (%s)", muxer_for (j->manifest->output),
          kind == REMASTER_STREAM_AUDIO ? "audio" : "subtitle", s);
    g_mutex_unlock (&j->lock);
  }
  /* everything not copied (the old video, data streams, a refused
   * stream: its error is reported before the video starts) is swallowed */
  if (!gst_pad_is_linked (pad))
    remaster_link_to_fakesink (GST_BIN (j->pipeline), pad);
}

/* ---- the video side ---- */

static void
on_segment_pad (GstElement * demux, GstPad * pad, gpointer user_data)
{
  GstElement *sink = user_data;
  g_autoptr (GstPad) sinkpad = gst_element_get_static_pad (sink, "sink");
  if (remaster_pad_stream_kind (pad) == REMASTER_STREAM_VIDEO
      && !gst_pad_is_linked (sinkpad)
      && gst_pad_link (pad, sinkpad) == GST_PAD_LINK_OK)
    return;
  remaster_link_to_fakesink (GST_BIN (GST_ELEMENT_PARENT (demux)), pad);
}

static gboolean
stopping (Join * j)
{
  g_mutex_lock (&j->lock);
  gboolean s = j->stopping;
  g_mutex_unlock (&j->lock);
  return s;
}

/* The container's chapters and global tags, set on the muxer before any
 * data flows. */
static void
apply_metadata (Join * j)
{
  g_mutex_lock (&j->lock);
  if (j->toc)
    gst_toc_setter_set_toc (GST_TOC_SETTER (j->mux), j->toc);
  if (j->global_tags)
    gst_tag_setter_merge_tags (GST_TAG_SETTER (j->mux), j->global_tags,
        GST_TAG_MERGE_REPLACE);
  g_mutex_unlock (&j->lock);
}

/* Of the video track's own tags only what still describes it: title and
 * language, not the old codec or bitrate.  Sent after the caps: appsrc
 * queues serialized events in order with its caps and buffers, and a tag
 * event ahead of the caps would make the pad push its segment before them
 * (a sticky-event misordering warning from appsrc and the muxer). */
static void
send_video_tags (Join * j)
{
  static const gchar *names[] = { GST_TAG_TITLE, GST_TAG_LANGUAGE_CODE,
    GST_TAG_LANGUAGE_NAME
  };
  GstTagList *keep = gst_tag_list_new_empty ();

  gst_tag_list_set_scope (keep, GST_TAG_SCOPE_STREAM);
  g_mutex_lock (&j->lock);
  for (guint i = 0; j->video_tags && i < G_N_ELEMENTS (names); i++) {
    const GValue *v = gst_tag_list_get_value_index (j->video_tags, names[i],
        0);
    if (v)
      gst_tag_list_add_value (keep, GST_TAG_MERGE_APPEND, names[i], v);
  }
  g_mutex_unlock (&j->lock);
  if (!gst_tag_list_is_empty (keep))
    gst_element_send_event (j->appsrc, gst_event_new_tag (keep));
  else
    gst_tag_list_unref (keep);
}

static gboolean
push_segment (Join * j, RemasterSegment * seg, GstCaps ** caps,
    GstClockTime * last_end, GError ** error)
{
  g_autofree gchar *path = remaster_manifest_segment_path (j->workdir,
      seg->index);
  g_autofree gchar *what = g_strdup_printf ("Reading segment %u", seg->index);
  g_autoptr (GstElement) p = gst_pipeline_new ("segment");
  GstElement *src = gst_element_factory_make ("filesrc", NULL);
  GstElement *demux = remaster_make ("matroskademux", NULL, error);
  GstElement *sink = gst_element_factory_make ("appsink", NULL);
  if (!demux) {
    gst_object_unref (src);
    gst_object_unref (sink);
    return FALSE;
  }
  g_object_set (src, "location", path, NULL);
  g_object_set (sink, "sync", FALSE, "max-buffers", 16, "drop", FALSE,
      "enable-last-sample", FALSE, NULL);
  gst_bin_add_many (GST_BIN (p), src, demux, sink, NULL);
  gst_element_link (src, demux);
  g_signal_connect (demux, "pad-added", G_CALLBACK (on_segment_pad), sink);
  if (!remaster_set_state_wait (p, GST_STATE_PLAYING, what, error)) {
    gst_element_set_state (p, GST_STATE_NULL);
    return FALSE;
  }

  g_autoptr (GstBus) bus = gst_element_get_bus (p);
  guint64 n = 0;
  GstClockTime first = GST_CLOCK_TIME_NONE, end = GST_CLOCK_TIME_NONE;
  gboolean ok = TRUE;
  while (ok) {
    GstSample *sample = gst_app_sink_try_pull_sample (GST_APP_SINK (sink),
        100 * GST_MSECOND);
    if (!sample) {
      gboolean eos;
      ok = remaster_bus_poll (bus, 0, &eos, what, error);
      if (ok && (gst_app_sink_is_eos (GST_APP_SINK (sink)) || eos))
        break;
      if (stopping (j)) {
        g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_PIPELINE,
            "join interrupted");
        ok = FALSE;
      }
      continue;
    }
    GstCaps *scaps = gst_sample_get_caps (sample);
    if (!*caps) {
      *caps = gst_caps_ref (scaps);
      /* As the muxer spells them: demuxers and muxers do not always agree
       * on field names (Matroska's FFV1 "ffvversion" vs "ffversion" in
       * 1.22); the intersection carries both. */
      g_autoptr (GstPad) srcpad = gst_element_get_static_pad (j->appsrc,
          "src");
      g_autoptr (GstCaps) accepted = gst_pad_peer_query_caps (srcpad, NULL);
      g_autoptr (GstCaps) for_mux = gst_caps_intersect (scaps, accepted);
      gst_app_src_set_caps (GST_APP_SRC (j->appsrc),
          gst_caps_is_empty (for_mux) ? scaps : for_mux);
      send_video_tags (j);
      GstStructure *s = gst_caps_get_structure (scaps, 0);
      gst_structure_get_int (s, "width", &j->width);
      gst_structure_get_int (s, "height", &j->height);
    } else if (!gst_caps_is_equal (*caps, scaps)) {
      /* One track has one codec configuration: segments encoded with
       * different settings (or encoder versions) cannot be concatenated
       * without re-encoding. */
      g_autofree gchar *a = gst_caps_to_string (*caps);
      g_autofree gchar *b = gst_caps_to_string (scaps);
      g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_VERIFY,
          "segment %u was encoded differently from segment 0 (%s vs %s); "
          "redo it with the same encoder and settings", seg->index, b, a);
      ok = FALSE;
    }
    GstBuffer *buf = gst_sample_get_buffer (sample);
    GstClockTime pts = GST_BUFFER_PTS (buf);
    if (ok && GST_CLOCK_TIME_IS_VALID (pts)) {
      if (!GST_CLOCK_TIME_IS_VALID (first) || pts < first)
        first = pts;
      GstClockTime e = pts + (GST_BUFFER_DURATION_IS_VALID (buf) ?
          GST_BUFFER_DURATION (buf) : 0);
      if (!GST_CLOCK_TIME_IS_VALID (end) || e > end)
        end = e;
    }
    if (ok) {
      GstFlowReturn r = gst_app_src_push_buffer (GST_APP_SRC (j->appsrc),
          gst_buffer_ref (buf));
      if (r != GST_FLOW_OK) {
        g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_PIPELINE,
            "the muxer stopped taking video (%s)", gst_flow_get_name (r));
        ok = FALSE;
      }
      n++;
    }
    gst_sample_unref (sample);
  }
  gst_element_set_state (p, GST_STATE_NULL);
  if (!ok)
    return FALSE;
  if (n != seg->frames_out) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_VERIFY,
        "segment %u holds %" G_GUINT64_FORMAT " frames, the manifest says %"
        G_GUINT64_FORMAT " (damaged file? redo it with --resume)",
        seg->index, n, seg->frames_out);
    return FALSE;
  }
  if (GST_CLOCK_TIME_IS_VALID (*last_end) && GST_CLOCK_TIME_IS_VALID (first)
      && first < *last_end - MIN (*last_end, GST_MSECOND)) {
    /* Overlap beyond the container's rounding (1 ms in Matroska). */
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_VERIFY,
        "segment %u starts at %" GST_TIME_FORMAT " before the end of the "
        "previous one (%" GST_TIME_FORMAT ")", seg->index,
        GST_TIME_ARGS (first), GST_TIME_ARGS (*last_end));
    return FALSE;
  }
  if (GST_CLOCK_TIME_IS_VALID (end))
    *last_end = end;
  j->frames += n;
  return TRUE;
}

static gpointer
pump_thread (gpointer user_data)
{
  Join *j = user_data;
  GError *error = NULL;

  g_mutex_lock (&j->lock);
  /* parsebin exposes a group of streams all at once, before any data
   * flows: when the video's first buffer passes, every stream is there. */
  while (!j->stopping && !j->video_seen)
    g_cond_wait (&j->cond, &j->lock);
  gboolean stop = j->stopping;
  if (!stop && j->link_error)
    g_set_error_literal (&error, REMASTER_ERROR, REMASTER_ERROR_PIPELINE,
        j->link_error);
  else if (!stop
      && j->n_copied != j->manifest->n_audio + j->manifest->n_subtitle)
    g_set_error (&error, REMASTER_ERROR, REMASTER_ERROR_PIPELINE,
        "the input shows %u audio and subtitle streams, the probe found %u",
        j->n_copied, j->manifest->n_audio + j->manifest->n_subtitle);
  g_mutex_unlock (&j->lock);
  if (stop)
    return NULL;

  GstCaps *caps = NULL;
  GstClockTime last_end = GST_CLOCK_TIME_NONE;
  if (!error) {
    apply_metadata (j);
    for (guint i = 0; i < j->manifest->segments->len && !error; i++)
      push_segment (j, g_ptr_array_index (j->manifest->segments, i), &caps,
          &last_end, &error);
  }
  if (caps)
    gst_caps_unref (caps);
  if (error) {
    /* Wake the main thread through the bus, like any element error. */
    gst_element_post_message (j->appsrc,
        gst_message_new_error (GST_OBJECT (j->appsrc), error, NULL));
    g_error_free (error);
  } else {
    gst_app_src_end_of_stream (GST_APP_SRC (j->appsrc));
  }
  return NULL;
}

/* ---- before the job: can the output hold the input's streams ---- */

/* The first stream of `all` that `muxer`'s `tmpl` pads refuse, or -1. */
static gint
first_refused (GstElement * muxer, const gchar * tmpl, const GPtrArray * all)
{
  GstPadTemplate *t = gst_element_get_pad_template (muxer, tmpl);
  g_autoptr (GstCaps) accepted = t ? gst_pad_template_get_caps (t) : NULL;
  for (guint i = 0; all && i < all->len; i++)
    if (!accepted || !stream_fits (g_ptr_array_index (all, i), accepted))
      return (gint) i;
  return -1;
}

gboolean
remaster_join_check_streams (const gchar * output,
    const GPtrArray * audio_caps, const GPtrArray * subtitle_caps,
    GError ** error)
{
  const gchar *name = muxer_for (output);
  g_autoptr (GstElement) mux = remaster_make (name, NULL, error);
  if (!mux)
    return FALSE;
  gst_object_ref_sink (mux);
  const GPtrArray *lists[] = { audio_caps, subtitle_caps };
  const gchar *tmpls[] = { "audio_%u", "subtitle_%u" };
  for (guint k = 0; k < 2; k++) {
    gint i = first_refused (mux, tmpls[k], lists[k]);
    if (i < 0)
      continue;
    GstCaps *caps = g_ptr_array_index (lists[k], i);
    g_autofree gchar *codec = gst_pb_utils_get_codec_description (caps);
    const gchar *type = gst_structure_get_name (gst_caps_get_structure (caps,
            0));
    g_autofree gchar *s = codec ? g_strdup_printf ("%s, %s", codec, type) :
        g_strdup (type);
    /* a WebM output may be the only problem */
    gboolean mkv_would = FALSE;
    if (!g_str_equal (name, "matroskamux")) {
      g_autoptr (GstElement) mkv = gst_element_factory_make ("matroskamux",
          NULL);
      if (mkv) {
        gst_object_ref_sink (mkv);
        mkv_would = first_refused (mkv, tmpls[0], lists[0]) < 0
            && first_refused (mkv, tmpls[1], lists[1]) < 0;
      }
    }
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_INPUT,
        "%s cannot store the input's %s stream %d (%s), so the join would "
        "fail after the upscaling; %s", name, k ? "subtitle" : "audio",
        i + 1, s, mkv_would ? "choose .mkv for the output" :
        "remaster a copy of the input without it and add it back to the "
        "result afterwards (docs/remastering.md, \"Streams GStreamer cannot "
        "mux\")");
    return FALSE;
  }
  return TRUE;
}

/* ---- the whole ---- */


static gboolean
build (Join * j, const gchar * temp, GError ** error)
{
  j->pipeline = gst_pipeline_new ("join");
  GstElement *src = remaster_make ("filesrc", NULL, error);
  GstElement *parse = src ? remaster_make_demuxbin (error) : NULL;
  j->appsrc = parse ? remaster_make ("appsrc", NULL, error) : NULL;
  j->mux = j->appsrc ? remaster_make (muxer_for (j->manifest->output), NULL,
      error) : NULL;
  GstElement *sink = j->mux ? remaster_make ("filesink", NULL, error) : NULL;
  if (!sink) {
    GstElement *all[] = { src, parse, j->appsrc, j->mux };
    for (guint i = 0; i < G_N_ELEMENTS (all); i++)
      if (all[i])
        gst_object_unref (all[i]);
    j->appsrc = j->mux = NULL;
    return FALSE;
  }
  g_object_set (src, "location", j->manifest->input, NULL);
  g_object_set (j->appsrc, "format", GST_FORMAT_TIME, "block", TRUE,
      "max-buffers", (guint64) 16, "max-bytes", (guint64) 0, NULL);
  g_object_set (sink, "location", temp, NULL);
  gst_bin_add_many (GST_BIN (j->pipeline), src, parse, j->appsrc, j->mux,
      sink, NULL);
  GstPad *muxpad = gst_element_request_pad_simple (j->mux, "video_%u");
  g_autoptr (GstPad) srcpad = gst_element_get_static_pad (j->appsrc, "src");
  gboolean ok = muxpad && gst_pad_link (srcpad, muxpad) == GST_PAD_LINK_OK
      && gst_element_link (src, parse) && gst_element_link (j->mux, sink);
  if (muxpad)
    gst_object_unref (muxpad);
  if (!ok) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_PIPELINE,
        "cannot set up the %s muxer for %s", muxer_for (j->manifest->output),
        j->manifest->output);
    return FALSE;
  }
  g_signal_connect (parse, "pad-added", G_CALLBACK (on_input_pad), j);
  return TRUE;
}

static gboolean
check_segments (Join * j, GError ** error)
{
  for (guint i = 0; i < j->manifest->segments->len; i++) {
    RemasterSegment *s = g_ptr_array_index (j->manifest->segments, i);
    g_autofree gchar *path = remaster_manifest_segment_path (j->workdir, i);
    if (s->state != REMASTER_SEGMENT_DONE) {
      g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_MANIFEST,
          "segment %u is %s, not done: finish it first (--resume)", i,
          remaster_segment_state_name (s->state));
      return FALSE;
    }
    if (remaster_fs_file_size (path) != (gint64) s->bytes) {
      g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_VERIFY,
          "%s is missing or not the size the manifest recorded; redo it "
          "with --resume", path);
      return FALSE;
    }
  }
  return TRUE;
}

static gboolean
mark_joined (RemasterManifest * m, gpointer user_data, GError ** error)
{
  m->joined = TRUE;
  return TRUE;
}

gboolean
remaster_join_run (const gchar * workdir, RemasterJoinResult * result,
    GError ** error)
{
  Join j = { 0 };
  j.workdir = workdir;
  j.manifest = remaster_manifest_load (workdir, error);
  if (!j.manifest)
    return FALSE;
  g_mutex_init (&j.lock);
  g_cond_init (&j.cond);
  g_autofree gchar *temp = remaster_fs_temp_name (j.manifest->output);
  GThread *thread = NULL;

  gboolean ok = check_segments (&j, error) && build (&j, temp, error);
  if (ok) {
    thread = g_thread_new ("join-video", pump_thread, &j);
    ok = remaster_set_state (j.pipeline, GST_STATE_PLAYING,
        "Joining", error);
  }
  if (ok) {
    g_autoptr (GstBus) bus = gst_element_get_bus (j.pipeline);
    gboolean eos = FALSE;
    while (ok && !eos)
      ok = remaster_bus_poll (bus, GST_CLOCK_TIME_NONE, &eos, "Joining",
          error);
  }
  g_mutex_lock (&j.lock);
  j.stopping = TRUE;
  g_cond_broadcast (&j.cond);
  g_mutex_unlock (&j.lock);
  if (j.pipeline)
    gst_element_set_state (j.pipeline, GST_STATE_NULL);
  if (thread)
    g_thread_join (thread);

  if (ok && j.frames != j.manifest->frames) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_VERIFY,
        "the joined video has %" G_GUINT64_FORMAT " frames, the input %"
        G_GUINT64_FORMAT, j.frames, j.manifest->frames);
    ok = FALSE;
  }
  /* what matroskamux writes wrong or not at all: the input's free-form
   * global tags and attachments (tags first: they grow the last element),
   * track flags, an HDR master's luminance */
  if (ok && j.global_tags) {
    g_autoptr (GError) tag_error = NULL;
    if (!remaster_mkv_add_tags (temp, j.global_tags, NULL, &tag_error)
        || !remaster_mkv_add_attachments (temp, j.global_tags, NULL,
            &tag_error))
      g_printerr ("ehat-remaster: warning: %s\n", tag_error->message);
  }
  if (ok) {
    g_autoptr (GError) flag_error = NULL;
    gboolean changed;
    if (!remaster_mkv_copy_track_flags (j.manifest->input, temp, &changed,
            &flag_error))
      g_printerr ("ehat-remaster: warning: %s\n", flag_error->message);
    remaster_mkv_fix_hdr (temp, j.manifest->video_caps);
  }
  ok = ok && remaster_fs_sync_file (temp, error)
      && remaster_fs_rename (temp, j.manifest->output, error);
  if (!ok)
    g_unlink (temp);
  if (ok) {
    result->frames = j.frames;
    result->bytes = (guint64) remaster_fs_file_size (j.manifest->output);
    result->width = j.width;
    result->height = j.height;
    ok = remaster_manifest_update (workdir, mark_joined, NULL, error);
  }

  if (j.pipeline)
    gst_object_unref (j.pipeline);
  if (j.toc)
    gst_toc_unref (j.toc);
  if (j.global_tags)
    gst_tag_list_unref (j.global_tags);
  if (j.video_tags)
    gst_tag_list_unref (j.video_tags);
  g_free (j.link_error);
  g_mutex_clear (&j.lock);
  g_cond_clear (&j.cond);
  remaster_manifest_free (j.manifest);
  return ok;
}
