/* remaster-probe.c — demux the input once and list its video packets. */
#include "remaster-probe.h"
#include "remaster-error.h"
#include "remaster-pipeline.h"

typedef struct
{
  GMutex lock;
  GstElement *pipeline;
  RemasterProbe *probe;
  gboolean have_video;
} ProbeContext;

static void
record_buffer (RemasterProbe * probe, GstBuffer * buf)
{
  /* In-band codec headers (Theora/Vorbis style) are not frames. */
  if (GST_BUFFER_FLAG_IS_SET (buf, GST_BUFFER_FLAG_HEADER))
    return;
  RemasterPacket p = {
    GST_BUFFER_PTS (buf),
    !GST_BUFFER_FLAG_IS_SET (buf, GST_BUFFER_FLAG_DELTA_UNIT),
  };
  g_array_append_val (probe->packets, p);
  if (GST_BUFFER_PTS_IS_VALID (buf)) {
    GstClockTime end = GST_BUFFER_PTS (buf) +
        (GST_BUFFER_DURATION_IS_VALID (buf) ? GST_BUFFER_DURATION (buf) : 0);
    if (!GST_CLOCK_TIME_IS_VALID (probe->end) || end > probe->end)
      probe->end = end;
  }
}

static gboolean
record_list_item (GstBuffer ** buf, guint idx, gpointer probe)
{
  record_buffer (probe, *buf);
  return TRUE;
}

static GstPadProbeReturn
on_video_data (GstPad * pad, GstPadProbeInfo * info, gpointer user_data)
{
  RemasterProbe *probe = user_data;
  /* Only this pad's streaming thread writes the packet list. */
  if (info->type & GST_PAD_PROBE_TYPE_BUFFER)
    record_buffer (probe, GST_PAD_PROBE_INFO_BUFFER (info));
  else if (info->type & GST_PAD_PROBE_TYPE_BUFFER_LIST)
    gst_buffer_list_foreach (GST_PAD_PROBE_INFO_BUFFER_LIST (info),
        record_list_item, probe);
  return GST_PAD_PROBE_OK;
}

static GstCaps *
stream_caps (GstPad * pad)
{
  GstCaps *caps = gst_pad_get_current_caps (pad);
  return caps ? caps : gst_pad_query_caps (pad, NULL);
}

/* The factory of the element behind one of parsebin's pads. */
static gchar *
demuxer_of (GstPad * pad)
{
  GstElement *parent = remaster_pad_producer (pad);
  GstElementFactory *f = parent ? gst_element_get_factory (parent) : NULL;
  gchar *name = f ? g_strdup (GST_OBJECT_NAME (f)) : NULL;
  if (parent)
    gst_object_unref (parent);
  return name;
}

static void
on_pad_added (GstElement * parsebin, GstPad * pad, gpointer user_data)
{
  ProbeContext *ctx = user_data;
  RemasterStreamKind kind = remaster_pad_stream_kind (pad);

  g_mutex_lock (&ctx->lock);
  switch (kind) {
    case REMASTER_STREAM_VIDEO:
      if (!ctx->have_video) {
        ctx->have_video = TRUE;
        ctx->probe->demuxer = demuxer_of (pad);
        ctx->probe->video_caps = stream_caps (pad);
        gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER |
            GST_PAD_PROBE_TYPE_BUFFER_LIST, on_video_data, ctx->probe, NULL);
      } else {
        ctx->probe->n_ignored++;
      }
      break;
    case REMASTER_STREAM_AUDIO:
      ctx->probe->n_audio++;
      g_ptr_array_add (ctx->probe->audio_caps, stream_caps (pad));
      break;
    case REMASTER_STREAM_SUBTITLE:
      ctx->probe->n_subtitle++;
      g_ptr_array_add (ctx->probe->subtitle_caps, stream_caps (pad));
      break;
    default:
      ctx->probe->n_ignored++;
      break;
  }
  g_mutex_unlock (&ctx->lock);
  remaster_link_to_fakesink (GST_BIN (ctx->pipeline), pad);
}

void
remaster_probe_free (RemasterProbe * probe)
{
  if (!probe)
    return;
  if (probe->video_caps)
    gst_caps_unref (probe->video_caps);
  g_array_unref (probe->packets);
  g_free (probe->demuxer);
  g_ptr_array_unref (probe->audio_caps);
  g_ptr_array_unref (probe->subtitle_caps);
  g_free (probe);
}

RemasterProbe *
remaster_probe_run (const gchar * path, GError ** error)
{
  g_autoptr (RemasterProbe) probe = g_new0 (RemasterProbe, 1);
  probe->packets = g_array_new (FALSE, FALSE, sizeof (RemasterPacket));
  probe->audio_caps = g_ptr_array_new_with_free_func ((GDestroyNotify)
      gst_caps_unref);
  probe->subtitle_caps = g_ptr_array_new_with_free_func ((GDestroyNotify)
      gst_caps_unref);
  probe->end = GST_CLOCK_TIME_NONE;

  g_autoptr (GstElement) pipeline = gst_pipeline_new ("probe");
  GstElement *src = remaster_make ("filesrc", NULL, error);
  if (!src)
    return NULL;
  GstElement *parse = remaster_make_demuxbin (error);
  if (!parse) {
    gst_object_unref (src);
    return NULL;
  }
  g_object_set (src, "location", path, NULL);
  gst_bin_add_many (GST_BIN (pipeline), src, parse, NULL);
  gst_element_link (src, parse);

  ProbeContext ctx = { 0 };
  g_mutex_init (&ctx.lock);
  ctx.pipeline = pipeline;
  ctx.probe = probe;
  g_signal_connect (parse, "pad-added", G_CALLBACK (on_pad_added), &ctx);

  g_autofree gchar *what = g_strdup_printf ("Reading %s", path);
  gboolean ok = remaster_run_to_eos (pipeline, what, error);
  g_mutex_clear (&ctx.lock);
  if (!ok)
    return NULL;

  /* MPEG program and transport streams carry video in PES packets, which
   * are not whole frames: neither the cut nor the frame count could be
   * exact (a DVD's VOB gave 3 packets for 10 frames) */
  if (g_strcmp0 (probe->demuxer, "mpegpsdemux") == 0
      || g_strcmp0 (probe->demuxer, "tsdemux") == 0) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_INPUT,
        "%s is an MPEG %s stream, whose video packets are not whole frames, "
        "so it cannot be cut frame-exactly: remux it into Matroska first "
        "(mkvmerge -o film.mkv %s, or ffmpeg -i %s -map 0 -c copy film.mkv)",
        path, g_str_equal (probe->demuxer, "tsdemux") ? "transport" :
        "program", path, path);
    return NULL;
  }
  if (!ctx.have_video || probe->packets->len == 0) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_INPUT,
        "%s has no video stream%s", path, ctx.have_video ? " frames" : "");
    return NULL;
  }
  for (guint i = 0; i < probe->packets->len; i++) {
    RemasterPacket *p = &g_array_index (probe->packets, RemasterPacket, i);
    if (!GST_CLOCK_TIME_IS_VALID (p->pts)) {
      /* Without a PTS per frame neither the cut nor the frame accounting
       * can be exact (MPEG-TS and raw elementary streams do this). */
      g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_INPUT,
          "%s: video packet %u has no presentation timestamp; remux the "
          "input into Matroska or MP4 first", path, i);
      return NULL;
    }
  }
  return g_steal_pointer (&probe);
}
