/* remaster-worker.c — one segment, frame-exact.
 *
 * Two pipelines joined by the worker's own loop:
 *
 *   filesrc ! decodebin ! appsink            (decode: seeks to the segment's
 *                                             keyframe, decodes onwards)
 *   appsrc ! videoconvert ! ehatsr ! videoconvert [! videoscale ! caps]
 *          ! encoder [! parser] ! matroskamux ! filesink   (segment file)
 *
 * The loop passes on exactly the decoded frames whose PTS lies in the
 * segment's range and ends the encode with EOS at the first frame past it.
 * Selecting after decoding (rather than asking the demuxer to stop) keeps
 * every frame that a decoder emits late because of reordering, and drops
 * whatever a key-unit seek decoded before the range.  The segment file
 * keeps the input's timestamps, so the join needs no offsets and variable
 * frame rates survive.
 *
 * Tiles: every segment must use the job's tile geometry (the manifest's
 * settings), or segments done on machines with other memory would differ
 * at the cuts (tiled and whole-frame results agree to ~45 dB, not bit for
 * bit).  When the job has none yet, the worker lets ehatsr choose for the
 * first frame and records that choice; a worker that finds another's
 * recorded first starts its segment over with those tiles. */
#include "remaster-worker.h"
#include "remaster-encoder.h"
#include "remaster-error.h"
#include "remaster-fs.h"
#include "remaster-manifest.h"
#include "remaster-mkvpatch.h"
#include "remaster-pipeline.h"
#include "remaster-segment.h"

#include <gst/app/app.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <unistd.h>

typedef struct
{
  const gchar *workdir;
  guint index;
  const RemasterWorkerOptions *options;
  RemasterManifest *manifest;   /* as loaded when starting */
  RemasterSegment *segment;

  GstElement *decode;
  GstElement *appsink;
  GstElement *encode;
  GstElement *appsrc;
  GstElement *ehatsr;
  gchar *temp_path;
  gint tile_width;              /* set on ehatsr; 0: its automatic choice */
  gint tile_height;
  gboolean pin_tiles;           /* record the first frame's tiles */

  guint64 frames_in;            /* pushed into the encode pipeline */
  gdouble setup_seconds;        /* process start to the first frame pushed */
  gint frames_out;              /* encoded packets (atomic) */
  gint64 last_report_us;
  gint64 last_file_report_us;
} Worker;

/* ---- manifest transitions ---- */

typedef struct
{
  const gchar *workdir;
  guint index;
  gboolean already_done;
} StartData;

static gboolean
mark_running (RemasterManifest * m, gpointer user_data, GError ** error)
{
  StartData *d = user_data;
  RemasterSegment *s = remaster_manifest_get_segment (m, d->index);
  if (!s) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_ARGS,
        "segment %u does not exist (the job has %u)", d->index,
        m->segments->len);
    return FALSE;
  }
  if (s->state == REMASTER_SEGMENT_DONE) {
    /* A rerun of a finished segment (a Slurm requeue, a task resubmitted
     * by --resume that another one beat): keep it while its file is still
     * what the manifest recorded. */
    g_autofree gchar *path = remaster_manifest_segment_path (d->workdir,
        d->index);
    if (remaster_fs_file_size (path) == (gint64) s->bytes) {
      d->already_done = TRUE;
      return TRUE;
    }
  }
  s->state = REMASTER_SEGMENT_RUNNING;
  s->attempts++;
  g_free (s->host);
  s->host = g_strdup (g_get_host_name ());
  s->pid = getpid ();
  g_clear_pointer (&s->error, g_free);
  return TRUE;
}

typedef struct
{
  guint index;
  gboolean ok;
  const gchar *error;
  guint64 frames_out;
  guint64 bytes;
  gdouble seconds;
  gdouble setup_seconds;
  const gchar *backend;
  gint tile_width;
  gint tile_height;
} FinishData;

static gboolean
mark_finished (RemasterManifest * m, gpointer user_data, GError ** error)
{
  FinishData *d = user_data;
  RemasterSegment *s = remaster_manifest_get_segment (m, d->index);
  if (!s)
    return FALSE;
  s->state = d->ok ? REMASTER_SEGMENT_DONE : REMASTER_SEGMENT_FAILED;
  g_free (s->error);
  s->error = g_strdup (d->error);
  if (d->ok) {
    s->frames_out = d->frames_out;
    s->bytes = d->bytes;
    s->seconds = d->seconds;
    s->setup_seconds = d->setup_seconds;
    g_free (s->backend);
    s->backend = g_strdup (d->backend);
    s->tile_width = d->tile_width;
    s->tile_height = d->tile_height;
  }
  return TRUE;
}

typedef struct
{
  guint index;
  gint tile_width;              /* in: this worker's; out: the job's */
  gint tile_height;
} TileData;

static gboolean
record_tiles (RemasterManifest * m, gpointer user_data, GError ** error)
{
  TileData *d = user_data;
  RemasterSettings *st = &m->settings;
  /* Test hook: another worker recorded these tiles while this one was
   * upscaling its first frame (a race too narrow to provoke reliably). */
  const gchar *race = g_getenv ("EHAT_REMASTER_TILE_RACE");
  if (race && !st->tile_width
      && sscanf (race, "%dx%d", &st->tile_width, &st->tile_height) == 2) {
    g_free (st->tile_origin);
    st->tile_origin = g_strdup ("EHAT_REMASTER_TILE_RACE");
  }
  if (st->tile_width > 0) {
    d->tile_width = st->tile_width;
    d->tile_height = st->tile_height;
    return TRUE;
  }
  st->tile_width = d->tile_width;
  st->tile_height = d->tile_height;
  g_free (st->tile_origin);
  st->tile_origin = g_strdup_printf ("segment %u", d->index);
  return TRUE;
}

/* ---- progress ---- */

static void
report_progress (Worker * w, gboolean force)
{
  gint64 now = g_get_monotonic_time ();
  guint frames = (guint) g_atomic_int_get (&w->frames_out);
  if (w->options->progress
      && (force || now - w->last_report_us >= 200 * G_TIME_SPAN_MILLISECOND)) {
    w->last_report_us = now;
    g_print ("{\"segment\":%u,\"frames\":%u,\"total\":%" G_GUINT64_FORMAT
        "}\n", w->index, frames, w->segment->frames);
    fflush (stdout);
  }
  /* For --status from any node: frames done of the running segment, a few
   * bytes rewritten every few seconds (not worth an fsync). */
  if (force || now - w->last_file_report_us >= 5 * G_TIME_SPAN_SECOND) {
    w->last_file_report_us = now;
    g_autofree gchar *seg = remaster_manifest_segment_path (w->workdir,
        w->index);
    g_autofree gchar *path = g_strconcat (seg, ".progress", NULL);
    g_autofree gchar *text = g_strdup_printf ("%u %" G_GUINT64_FORMAT "\n",
        frames, w->segment->frames);
    (void) g_file_set_contents (path, text, -1, NULL);
  }
}

static GstPadProbeReturn
count_encoded (GstPad * pad, GstPadProbeInfo * info, gpointer user_data)
{
  Worker *w = user_data;
  GstBuffer *buf = GST_PAD_PROBE_INFO_BUFFER (info);
  if (!GST_BUFFER_FLAG_IS_SET (buf, GST_BUFFER_FLAG_HEADER))
    g_atomic_int_inc (&w->frames_out);
  return GST_PAD_PROBE_OK;
}

/* ---- decode pipeline ---- */

static gboolean
on_autoplug_continue (GstElement * bin, GstPad * pad, GstCaps * caps,
    gpointer user_data)
{
  /* Only the video is decoded; audio and subtitles stop at the demuxer
   * (and are swallowed by fakesinks): the join copies them from the input. */
  RemasterStreamKind kind = remaster_stream_kind (caps);
  return kind != REMASTER_STREAM_AUDIO && kind != REMASTER_STREAM_SUBTITLE;
}

static void
on_decoded_pad (GstElement * decodebin, GstPad * pad, gpointer user_data)
{
  Worker *w = user_data;
  GstCaps *caps = gst_pad_get_current_caps (pad);
  gboolean raw_video = caps && g_str_equal (gst_structure_get_name
      (gst_caps_get_structure (caps, 0)), "video/x-raw");
  if (caps)
    gst_caps_unref (caps);

  if (raw_video) {
    g_autoptr (GstPad) sinkpad = gst_element_get_static_pad (w->appsink,
        "sink");
    /* The first decoded video stream is the one the probe listed. */
    if (!gst_pad_is_linked (sinkpad) && gst_pad_link (pad,
            sinkpad) == GST_PAD_LINK_OK)
      return;
  }
  remaster_link_to_fakesink (GST_BIN (w->decode), pad);
}

static gboolean
build_decode (Worker * w, GError ** error)
{
  w->decode = gst_pipeline_new ("decode");
  GstElement *src = remaster_make ("filesrc", NULL, error);
  GstElement *dec = src ? remaster_make ("decodebin", NULL, error) : NULL;
  w->appsink = dec ? remaster_make ("appsink", NULL, error) : NULL;
  if (!w->appsink) {
    if (src)
      gst_object_unref (src);
    if (dec)
      gst_object_unref (dec);
    return FALSE;
  }
  g_object_set (src, "location", w->manifest->input, NULL);
  g_autoptr (GstCaps) raw = gst_caps_from_string ("video/x-raw");
  /* A few frames of look-ahead keep the decoder busy while ehatsr works,
   * without holding a film's worth of frames. */
  g_object_set (w->appsink, "caps", raw, "sync", FALSE, "max-buffers", 4,
      "drop", FALSE, "enable-last-sample", FALSE, NULL);
  gst_bin_add_many (GST_BIN (w->decode), src, dec, w->appsink, NULL);
  gst_element_link (src, dec);
  g_signal_connect (dec, "autoplug-continue",
      G_CALLBACK (on_autoplug_continue), w);
  g_signal_connect (dec, "pad-added", G_CALLBACK (on_decoded_pad), w);
  return TRUE;
}

/* ---- encode pipeline ---- */

static gboolean
build_encode (Worker * w, GError ** error)
{
  const RemasterSettings *st = &w->manifest->settings;
  GstElement *enc = NULL, *parser = NULL;
  if (!remaster_encoder_make (st->encoder, st->quality,
          w->options->device_id >= 0 ? w->options->device_id : 0, &enc,
          &parser, error))
    return FALSE;

  w->encode = gst_pipeline_new ("encode");
  GstBin *bin = GST_BIN (w->encode);
  gst_bin_add (bin, enc);
  if (parser)
    gst_bin_add (bin, parser);

  const gchar *chain[] = { "appsrc", "videoconvert", "ehatsr",
    "videoconvert", "videoscale", "capsfilter", "matroskamux", "filesink"
  };
  GstElement *e[G_N_ELEMENTS (chain)] = { NULL };
  gboolean scale_to = st->scale_to_width > 0;
  for (guint i = 0; i < G_N_ELEMENTS (chain); i++) {
    if (!scale_to && (i == 4 || i == 5))
      continue;
    e[i] = remaster_make (chain[i], NULL, error);
    if (!e[i])
      return FALSE;
    gst_bin_add (bin, e[i]);
  }
  w->appsrc = e[0];
  w->ehatsr = e[2];

  g_object_set (w->appsrc, "format", GST_FORMAT_TIME, "is-live", FALSE,
      "block", TRUE, "max-buffers", (guint64) 2, "max-bytes", (guint64) 0,
      NULL);
  g_object_set (w->ehatsr, "model", st->model, "qos", FALSE, NULL);
  gst_util_set_object_arg (G_OBJECT (w->ehatsr), "backend", st->backend);
  gst_util_set_object_arg (G_OBJECT (w->ehatsr), "precision", st->precision);
  g_object_set (w->ehatsr, "ensemble", (guint) st->ensemble, NULL);
  if (w->tile_width > 0)
    g_object_set (w->ehatsr, "tile-size", w->tile_width, "tile-height",
        w->tile_height, NULL);
  if (w->options->device_id >= 0)
    g_object_set (w->ehatsr, "device-id", w->options->device_id, NULL);
  if (scale_to) {
    gst_util_set_object_arg (G_OBJECT (e[4]), "method", "lanczos");
    g_autoptr (GstCaps) caps = gst_caps_new_simple ("video/x-raw",
        "width", G_TYPE_INT, st->scale_to_width,
        "height", G_TYPE_INT, st->scale_to_height, NULL);
    g_object_set (e[5], "caps", caps, NULL);
  }
  g_object_set (e[7], "location", w->temp_path, NULL);

  gboolean ok = gst_element_link_many (e[0], e[1], e[2], e[3], NULL);
  GstElement *last = e[3];
  if (ok && scale_to) {
    ok = gst_element_link_many (last, e[4], e[5], NULL);
    last = e[5];
  }
  ok = ok && gst_element_link (last, enc);
  last = enc;
  if (ok && parser) {
    ok = gst_element_link (enc, parser);
    last = parser;
  }
  ok = ok && gst_element_link_many (last, e[6], e[7], NULL);
  if (!ok) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_PIPELINE,
        "cannot link ehatsr to encoder %s and matroskamux (the encoder's "
        "output is not accepted by Matroska?)", st->encoder);
    return FALSE;
  }
  g_autoptr (GstPad) encsrc = gst_element_get_static_pad (enc, "src");
  gst_pad_add_probe (encsrc, GST_PAD_PROBE_TYPE_BUFFER, count_encoded, w,
      NULL);
  return TRUE;
}

/* ---- the loop ---- */

static gboolean
check_bus (GstElement * pipeline, const gchar * what, GError ** error)
{
  g_autoptr (GstBus) bus = gst_element_get_bus (pipeline);
  GstMessage *msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);
  if (!msg)
    return TRUE;
  remaster_error_from_message (msg, what, error);
  gst_message_unref (msg);
  return FALSE;
}

static gboolean
seek_to_segment (Worker * w, GError ** error)
{
  if (!remaster_set_state_wait (w->decode, GST_STATE_PAUSED,
          "Decoding the input", error))
    return FALSE;
  if (!GST_CLOCK_TIME_IS_VALID (w->segment->start))
    return TRUE;
  /* Key-unit, snap before: the demuxer starts at the keyframe the segment
   * begins with (or an earlier one if its index is coarse; the PTS filter
   * drops the extra frames). */
  if (!gst_element_seek_simple (w->decode, GST_FORMAT_TIME,
          GST_SEEK_FLAG_FLUSH | GST_SEEK_FLAG_KEY_UNIT |
          GST_SEEK_FLAG_SNAP_BEFORE, w->segment->start)) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_INPUT,
        "%s: cannot seek to %" GST_TIME_FORMAT " (is the input seekable?)",
        w->manifest->input, GST_TIME_ARGS (w->segment->start));
    return FALSE;
  }
  return remaster_set_state_wait (w->decode, GST_STATE_PAUSED,
      "Seeking in the input", error);
}

/* ehatsr's tiles of its last frame; FALSE before the first one. */
static gboolean
ehatsr_tiles (Worker * w, gint * tile_width, gint * tile_height)
{
  GstStructure *stats = NULL;
  guint64 frames = 0;
  g_object_get (w->ehatsr, "stats", &stats, NULL);
  if (!stats)
    return FALSE;
  gst_structure_get_uint64 (stats, "frames", &frames);
  gst_structure_get_int (stats, "tile-width", tile_width);
  gst_structure_get_int (stats, "tile-height", tile_height);
  gst_structure_free (stats);
  return frames > 0;
}

static gboolean
push_frame (Worker * w, GstSample * sample, GstCaps ** current,
    GError ** error)
{
  GstCaps *caps = gst_sample_get_caps (sample);
  if (caps && (!*current || !gst_caps_is_equal (caps, *current))) {
    gst_caps_replace (current, caps);
    gst_app_src_set_caps (GST_APP_SRC (w->appsrc), caps);
  }
  GstFlowReturn r = gst_app_src_push_buffer (GST_APP_SRC (w->appsrc),
      gst_buffer_ref (gst_sample_get_buffer (sample)));
  w->frames_in++;
  if (r == GST_FLOW_OK)
    return TRUE;
  if (check_bus (w->encode, "Upscaling and encoding", error))
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_PIPELINE,
        "the encode pipeline stopped (%s)", gst_flow_get_name (r));
  return FALSE;
}

/* After the first frame of a job without tiles yet: record ehatsr's, or
 * take the ones another worker recorded meanwhile and start over with
 * them (the encode pipeline anew, the first frame again). */
static gboolean
pin_tiles (Worker * w, GstSample * first, GstCaps ** current,
    GError ** error)
{
  TileData d = { w->index, 0, 0 };
  /* ehatsr works in the appsrc's streaming thread */
  while (!ehatsr_tiles (w, &d.tile_width, &d.tile_height)) {
    if (!check_bus (w->encode, "Upscaling and encoding", error))
      return FALSE;
    g_usleep (2 * 1000);
  }
  gint mine_w = d.tile_width, mine_h = d.tile_height;
  if (!remaster_manifest_update (w->workdir, record_tiles, &d, error))
    return FALSE;
  w->pin_tiles = FALSE;
  w->tile_width = d.tile_width;
  w->tile_height = d.tile_height;
  if (mine_w == d.tile_width && mine_h == d.tile_height)
    return TRUE;

  g_printerr ("ehat-remaster: segment %u: restarting with the job's %dx%d "
      "tiles (another worker recorded them first; this one chose %dx%d)\n",
      w->index, d.tile_width, d.tile_height, mine_w, mine_h);
  gst_element_set_state (w->encode, GST_STATE_NULL);
  g_clear_pointer (&w->encode, gst_object_unref);
  g_unlink (w->temp_path);
  g_atomic_int_set (&w->frames_out, 0);
  w->frames_in = 0;
  gst_caps_replace (current, NULL);
  return build_encode (w, error)
      && remaster_set_state (w->encode, GST_STATE_PLAYING,
      "Starting ehatsr and the encoder", error)
      && push_frame (w, first, current, error);
}

static gboolean
pump_frames (Worker * w, GError ** error)
{
  GstAppSink *sink = GST_APP_SINK (w->appsink);
  GstCaps *current = NULL;
  GstClockTime last_pts = GST_CLOCK_TIME_NONE;
  gboolean ok = TRUE;

  while (ok) {
    GstSample *sample = gst_app_sink_try_pull_sample (sink,
        100 * GST_MSECOND);
    if (!sample) {
      ok = check_bus (w->decode, "Decoding the input", error)
          && check_bus (w->encode, "Upscaling and encoding", error);
      if (ok && gst_app_sink_is_eos (sink))
        break;
      report_progress (w, FALSE);
      continue;
    }
    GstBuffer *buf = gst_sample_get_buffer (sample);
    GstClockTime pts = GST_BUFFER_PTS (buf);
    if (!GST_CLOCK_TIME_IS_VALID (pts)) {
      g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_VERIFY,
          "the decoder produced a frame without a timestamp");
      ok = FALSE;
    } else if (GST_CLOCK_TIME_IS_VALID (w->segment->end)
        && pts >= w->segment->end) {
      gst_sample_unref (sample);
      break;                    /* the next segment's first frame */
    } else if (!remaster_segment_contains (w->segment, pts)) {
      /* decoded from the keyframe before the range: not ours */
    } else if (GST_CLOCK_TIME_IS_VALID (last_pts) && pts <= last_pts) {
      g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_VERIFY,
          "decoded frames out of order (%" GST_TIME_FORMAT " after %"
          GST_TIME_FORMAT ")", GST_TIME_ARGS (pts), GST_TIME_ARGS (last_pts));
      ok = FALSE;
    } else if (w->frames_in == 0 && GST_CLOCK_TIME_IS_VALID (w->segment->start)
        && pts != w->segment->start) {
      g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_VERIFY,
          "segment %u should start with the keyframe at %" GST_TIME_FORMAT
          " but the first decoded frame is at %" GST_TIME_FORMAT
          " (inaccurate seek or undecodable keyframe)", w->index,
          GST_TIME_ARGS (w->segment->start), GST_TIME_ARGS (pts));
      ok = FALSE;
    } else {
      if (w->frames_in == 0)
        w->setup_seconds = (g_get_monotonic_time () -
            w->options->started_us) / 1e6;
      ok = push_frame (w, sample, &current, error);
      if (ok && w->pin_tiles)
        ok = pin_tiles (w, sample, &current, error);
      last_pts = pts;
    }
    gst_sample_unref (sample);
    report_progress (w, FALSE);
  }
  gst_caps_replace (&current, NULL);
  return ok;
}

static gboolean
finish_encode (Worker * w, GError ** error)
{
  gst_app_src_end_of_stream (GST_APP_SRC (w->appsrc));
  g_autoptr (GstBus) bus = gst_element_get_bus (w->encode);
  gboolean eos = FALSE, ok = TRUE;
  while (ok && !eos) {
    ok = remaster_bus_poll (bus, 200 * GST_MSECOND, &eos,
        "Upscaling and encoding", error);
    report_progress (w, FALSE);
  }
  return ok;
}

static gboolean
check_stats (Worker * w, gchar ** backend, gint * tile_width,
    gint * tile_height, GError ** error)
{
  GstStructure *stats = NULL;
  g_object_get (w->ehatsr, "stats", &stats, NULL);
  guint64 frames = 0, dropped = 0, degraded = 0;
  if (stats) {
    gst_structure_get_uint64 (stats, "frames", &frames);
    gst_structure_get_uint64 (stats, "dropped", &dropped);
    gst_structure_get_uint64 (stats, "degraded", &degraded);
    gst_structure_get_int (stats, "tile-width", tile_width);
    gst_structure_get_int (stats, "tile-height", tile_height);
    *backend = g_strdup (gst_structure_get_string (stats, "backend"));
    gst_structure_free (stats);
  }
  guint64 out = (guint64) g_atomic_int_get (&w->frames_out);
  if (w->frames_in != w->segment->frames || out != w->frames_in
      || frames != w->frames_in || dropped || degraded) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_VERIFY,
        "segment %u: expected %" G_GUINT64_FORMAT " frames, decoded %"
        G_GUINT64_FORMAT ", upscaled %" G_GUINT64_FORMAT " (dropped %"
        G_GUINT64_FORMAT ", bicubic %" G_GUINT64_FORMAT "), encoded %"
        G_GUINT64_FORMAT, w->index, w->segment->frames, w->frames_in,
        frames, dropped, degraded, out);
    return FALSE;
  }
  return TRUE;
}

static void
worker_clear (Worker * w)
{
  if (w->decode) {
    gst_element_set_state (w->decode, GST_STATE_NULL);
    gst_object_unref (w->decode);
  }
  if (w->encode) {
    gst_element_set_state (w->encode, GST_STATE_NULL);
    gst_object_unref (w->encode);
  }
  if (w->temp_path) {
    g_unlink (w->temp_path);
    g_free (w->temp_path);
  }
  remaster_manifest_free (w->manifest);
}

static gboolean
process (Worker * w, gchar ** backend, gint * tile_width, gint * tile_height,
    GError ** error)
{
  g_autofree gchar *final = remaster_manifest_segment_path (w->workdir,
      w->index);
  w->temp_path = remaster_fs_temp_name (final);
  if (!build_decode (w, error) || !build_encode (w, error))
    return FALSE;
  if (!seek_to_segment (w, error))
    return FALSE;
  if (!remaster_set_state (w->encode, GST_STATE_PLAYING,
          "Starting ehatsr and the encoder", error))
    return FALSE;
  if (!remaster_set_state_wait (w->decode, GST_STATE_PLAYING,
          "Decoding the input", error))
    return FALSE;
  if (!pump_frames (w, error))
    return FALSE;
  gst_element_set_state (w->decode, GST_STATE_NULL);
  if (!finish_encode (w, error))
    return FALSE;
  gboolean ok = check_stats (w, backend, tile_width, tile_height, error);
  gst_element_set_state (w->encode, GST_STATE_NULL);
  if (!ok)
    return FALSE;
  report_progress (w, TRUE);
  /* each Matroska write would scale an HDR master's luminance down */
  remaster_mkv_fix_hdr (w->temp_path, w->manifest->video_caps);
  /* Durable before visible: a crash after the rename leaves a complete
   * file, a crash before it leaves only a temporary one. */
  if (!remaster_fs_sync_file (w->temp_path, error)
      || !remaster_fs_rename (w->temp_path, final, error))
    return FALSE;
  g_clear_pointer (&w->temp_path, g_free);
  return TRUE;
}

gboolean
remaster_worker_run (const gchar * workdir, guint index,
    const RemasterWorkerOptions * options, GError ** error)
{
  StartData start = { workdir, index, FALSE };
  if (!remaster_manifest_update (workdir, mark_running, &start, error))
    return FALSE;
  if (start.already_done)
    return TRUE;

  Worker w = { 0 };
  w.workdir = workdir;
  w.index = index;
  w.options = options;
  w.manifest = remaster_manifest_load (workdir, error);
  if (!w.manifest)
    return FALSE;
  w.segment = remaster_manifest_get_segment (w.manifest, index);
  w.tile_width = w.manifest->settings.tile_width;
  w.tile_height = w.manifest->settings.tile_height;
  w.pin_tiles = w.tile_width == 0;

  gint64 t0 = g_get_monotonic_time ();
  g_autofree gchar *backend = NULL;
  gint tile_width = 0, tile_height = 0;
  g_autoptr (GError) err = NULL;
  gboolean ok;
  /* Test hook: a worker that fails on purpose, for the failure and
   * resubmission paths (a bad node, a broken file) that cannot be
   * provoked reliably otherwise. */
  const gchar *fail = g_getenv ("EHAT_REMASTER_FAIL_SEGMENT");
  if (fail && g_ascii_strtoull (fail, NULL, 10) == index && *fail) {
    g_set_error (&err, REMASTER_ERROR, REMASTER_ERROR_WORKER,
        "failure injected by EHAT_REMASTER_FAIL_SEGMENT");
    ok = FALSE;
  } else {
    ok = process (&w, &backend, &tile_width, &tile_height, &err);
  }
  g_autofree gchar *final = remaster_manifest_segment_path (workdir, index);

  FinishData fin = { index, ok, ok ? NULL : err->message,
    w.frames_in, ok ? (guint64) remaster_fs_file_size (final) : 0,
    (g_get_monotonic_time () - t0) / 1e6, w.setup_seconds, backend,
    tile_width, tile_height
  };
  worker_clear (&w);
  g_autoptr (GError) merr = NULL;
  if (!remaster_manifest_update (workdir, mark_finished, &fin, &merr)) {
    if (ok) {
      g_propagate_error (error, g_steal_pointer (&merr));
      return FALSE;
    }
  }
  if (!ok) {
    g_propagate_prefixed_error (error, g_steal_pointer (&err),
        "segment %u: ", index);
    return FALSE;
  }
  return TRUE;
}
