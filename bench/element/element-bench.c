/* What the ehatsr element costs on top of libehat (issue 5's target: at
 * most 5 %).  The same frames — crops of real Vid4 frames, as I420 like a
 * decoder hands them over — go through
 *
 *   A. libehat alone: ehat_upscale_frame (on the CPU: ehat_frame_read →
 *      ehat_upscale_tiled → ehat_frame_write), the work the element
 *      cannot avoid, and
 *   B. appsrc ! ehatsr ! fakesink in a real pipeline,
 *
 * with the same model, backend, tile settings and thread count,
 * alternating A and B so that a busy machine affects both alike.  Reports
 * the best wall time and process CPU time per frame of each and the ratio.
 *
 *   element-bench MODEL FRAME.png [FRAME.png ...] [--size WxH]
 *       [--repeat N] [--tile-size T]
 *
 * Build: part of the meson build (build/bench/element-bench); run with
 * GST_PLUGIN_PATH=build/gst.  See bench/element/README.md. */
#include "ehat.h"
#include "ehat-frame.h"
#include "ehat-png.h"
#include "ehat-tiler.h"

#include <gst/gst.h>
#include <gst/video/video.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct
{
  double wall_ms, cpu_ms;
} Times;

static Times
now (void)
{
  struct timespec w, c;
  Times t;

  clock_gettime (CLOCK_MONOTONIC, &w);
  clock_gettime (CLOCK_PROCESS_CPUTIME_ID, &c);
  t.wall_ms = w.tv_sec * 1e3 + w.tv_nsec / 1e6;
  t.cpu_ms = c.tv_sec * 1e3 + c.tv_nsec / 1e6;
  return t;
}

static Times
since (Times t0, int n)
{
  Times t = now ();

  t.wall_ms = (t.wall_ms - t0.wall_ms) / n;
  t.cpu_ms = (t.cpu_ms - t0.cpu_ms) / n;
  return t;
}

/* A w×h crop from the centre of each PNG, converted to I420 (BT.709
 * limited, as decoders deliver) with GstVideoConverter. */
static GstBuffer **
load_frames (char **pngs, int n, int w, int h, GstVideoInfo *info)
{
  GstBuffer **out = g_new0 (GstBuffer *, n);
  GstVideoInfo rgb_info;
  int i, y;

  gst_video_info_set_format (&rgb_info, GST_VIDEO_FORMAT_RGB, w, h);
  gst_video_info_set_format (info, GST_VIDEO_FORMAT_I420, w, h);
  info->colorimetry.matrix = GST_VIDEO_COLOR_MATRIX_BT709;
  info->colorimetry.range = GST_VIDEO_COLOR_RANGE_16_235;
  for (i = 0; i < n; i++) {
    GError *err = NULL;
    guint8 *rgb;
    int iw, ih, x0, y0;
    GstBuffer *rb = gst_buffer_new_allocate (NULL, rgb_info.size, NULL);
    GstVideoFrame rf, yf;
    GstVideoConverter *conv;

    if (!ehat_png_read (pngs[i], &rgb, &iw, &ih, &err)) {
      g_printerr ("%s\n", err->message);
      exit (1);
    }
    if (iw < w || ih < h) {
      g_printerr ("%s: %d×%d is smaller than %d×%d\n", pngs[i], iw, ih, w, h);
      exit (1);
    }
    x0 = (iw - w) / 2;
    y0 = (ih - h) / 2;
    gst_video_frame_map (&rf, &rgb_info, rb, GST_MAP_WRITE);
    for (y = 0; y < h; y++)
      memcpy ((guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&rf, 0)
          + (gsize) y * GST_VIDEO_FRAME_PLANE_STRIDE (&rf, 0),
          rgb + ((gsize) (y0 + y) * iw + x0) * 3, (gsize) w * 3);
    out[i] = gst_buffer_new_allocate (NULL, info->size, NULL);
    gst_video_frame_map (&yf, info, out[i], GST_MAP_WRITE);
    conv = gst_video_converter_new (&rgb_info, info, NULL);
    gst_video_converter_frame (conv, &rf, &yf);
    gst_video_converter_free (conv);
    gst_video_frame_unmap (&yf);
    gst_video_frame_unmap (&rf);
    gst_buffer_unref (rb);
    g_free (rgb);
  }
  return out;
}

static void
wrap (GstVideoFrame *vf, EhatFrame *f)
{
  int p;

  f->format = EHAT_PIXEL_I420;
  f->width = GST_VIDEO_FRAME_WIDTH (vf);
  f->height = GST_VIDEO_FRAME_HEIGHT (vf);
  for (p = 0; p < 3; p++) {
    f->data[p] = GST_VIDEO_FRAME_PLANE_DATA (vf, p);
    f->stride[p] = GST_VIDEO_FRAME_PLANE_STRIDE (vf, p);
  }
}

/* A: the library's share of the element's work, frame by frame. */
static Times
run_library (EhatEngine *engine, GstBuffer **frames, int n,
    GstVideoInfo *info, int scale, int tile_size)
{
  GstVideoInfo oinfo;
  EhatColorInfo color = { EHAT_MATRIX_BT709, EHAT_RANGE_LIMITED,
    EHAT_CHROMA_LEFT
  };
  EhatTileOptions topt = EHAT_TILE_OPTIONS_INIT;
  int w = info->width, h = info->height;
  GstBuffer *ob;
  Times t0;
  int i;

  gst_video_info_set_format (&oinfo, GST_VIDEO_FORMAT_I420, w * scale,
      h * scale);
  ob = gst_buffer_new_allocate (NULL, oinfo.size, NULL);
  topt.tile_size = tile_size;
  t0 = now ();
  for (i = 0; i < n; i++) {
    GstVideoFrame in, out;
    EhatFrame fin, fout;
    GError *err = NULL;

    /* a fresh output buffer per frame, as downstream pools hand out */
    gst_video_frame_map (&in, info, frames[i], GST_MAP_READ);
    gst_video_frame_map (&out, &oinfo, ob, GST_MAP_WRITE);
    wrap (&in, &fin);
    wrap (&out, &fout);
    if (!ehat_upscale_frame (engine, &fin, &color, &fout, &color, &topt,
            NULL, &err)) {
      g_printerr ("libehat: %s\n", err->message);
      exit (1);
    }
    gst_video_frame_unmap (&out);
    gst_video_frame_unmap (&in);
  }
  t0 = since (t0, n);
  gst_buffer_unref (ob);
  return t0;
}

/* B: the same frames through appsrc ! ehatsr ! fakesink.  Frame 0 is a
 * warm-up (the element creates its engine and plans on the first caps and
 * frame, as A did before its clock started): timing runs from frame 0's
 * arrival at the sink to EOS, over the other n − 1 frames. */
static void
on_handoff (GstElement *sink, GstBuffer *buf, GstPad *pad, Times *first)
{
  if (first->wall_ms == 0.0)
    *first = now ();
}

static Times
run_element (const char *model, GstBuffer **frames, int n,
    GstVideoInfo *info, int tile_size)
{
  gchar *desc = g_strdup_printf ("appsrc name=src format=time ! ehatsr "
      "model=\"%s\" backend=cpu tile-size=%d ! fakesink name=sink "
      "sync=false signal-handoffs=true", model, tile_size);
  GError *err = NULL;
  GstElement *p = gst_parse_launch (desc, &err), *src, *sink;
  GstFlowReturn ret;
  GstCaps *caps;
  GstBus *bus;
  GstMessage *msg;
  Times first = { 0.0, 0.0 };
  int i;

  if (!p) {
    g_printerr ("pipeline: %s\n", err->message);
    exit (1);
  }
  src = gst_bin_get_by_name (GST_BIN (p), "src");
  sink = gst_bin_get_by_name (GST_BIN (p), "sink");
  g_signal_connect (sink, "handoff", G_CALLBACK (on_handoff), &first);
  caps = gst_video_info_to_caps (info);
  gst_caps_set_simple (caps, "framerate", GST_TYPE_FRACTION, 25, 1, NULL);
  g_object_set (src, "caps", caps, "max-buffers", (guint64) n + 1, NULL);
  gst_caps_unref (caps);
  gst_element_set_state (p, GST_STATE_PLAYING);
  for (i = 0; i < n; i++) {
    GstBuffer *b = gst_buffer_copy (frames[i]);

    GST_BUFFER_PTS (b) = i * GST_SECOND / 25;
    GST_BUFFER_DURATION (b) = GST_SECOND / 25;
    g_signal_emit_by_name (src, "push-buffer", b, &ret);
    gst_buffer_unref (b);
  }
  g_signal_emit_by_name (src, "end-of-stream", &ret);
  bus = gst_element_get_bus (p);
  msg = gst_bus_timed_pop_filtered (bus, GST_CLOCK_TIME_NONE,
      GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR) {
    gst_message_parse_error (msg, &err, NULL);
    g_printerr ("ehatsr: %s\n", err->message);
    exit (1);
  }
  first = since (first, MAX (n - 1, 1));
  gst_message_unref (msg);
  gst_object_unref (bus);
  gst_element_set_state (p, GST_STATE_NULL);
  gst_object_unref (sink);
  gst_object_unref (src);
  gst_object_unref (p);
  g_free (desc);
  return first;
}

int
main (int argc, char **argv)
{
  static gchar *size = NULL;
  static int repeat = 3, tile_size = 0;
  static gchar **rest = NULL;
  GOptionEntry entries[] = {
    {"size", 0, 0, G_OPTION_ARG_STRING, &size, "LR frame size (320x180)",
        "WxH"},
    {"repeat", 0, 0, G_OPTION_ARG_INT, &repeat, "Alternating rounds", "N"},
    {"tile-size", 0, 0, G_OPTION_ARG_INT, &tile_size, "0 = automatic", "T"},
    {G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &rest, NULL,
        "MODEL FRAME.png..."},
    {NULL}
  };
  GOptionContext *ctx = g_option_context_new ("MODEL FRAME.png...");
  GError *err = NULL;
  EhatEngineOptions eopt = EHAT_ENGINE_OPTIONS_INIT;
  EhatModel *model;
  EhatEngine *engine;
  GstBuffer **frames;
  GstVideoInfo info;
  Times best_a = { 1e30, 1e30 }, best_b = { 1e30, 1e30 };
  int w = 320, h = 180, n, r, i;

  gst_init (&argc, &argv);
  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &err)
      || !rest || g_strv_length (rest) < 2
      || (size && sscanf (size, "%dx%d", &w, &h) != 2)) {
    g_printerr ("usage: element-bench MODEL FRAME.png... [--size WxH] "
        "[--repeat N] [--tile-size T]\n");
    return 2;
  }
  n = g_strv_length (rest) - 1;
  frames = load_frames (rest + 1, n, w, h, &info);
  model = ehat_model_load (rest[0], &err);
  if (!model) {
    g_printerr ("%s\n", err->message);
    return 1;
  }
  eopt.backend = EHAT_BACKEND_CPU;
  engine = ehat_engine_new (model, &eopt, &err);
  if (!engine) {
    g_printerr ("%s\n", err->message);
    return 1;
  }
  /* one untimed frame each: arena plans, thread start-up, page faults */
  run_library (engine, frames, 1, &info, ehat_model_get_config (model)->upscale,
      tile_size);
  for (r = 0; r < repeat; r++) {
    /* A over frames 1…n−1 too, so both time the same frames */
    Times a = run_library (engine, frames + 1, MAX (n - 1, 1), &info,
        ehat_model_get_config (model)->upscale, tile_size);
    Times b = run_element (rest[0], frames, n, &info, tile_size);

    printf ("round %d: libehat %.1f ms/frame (cpu %.1f), element %.1f "
        "ms/frame (cpu %.1f)\n", r + 1, a.wall_ms, a.cpu_ms, b.wall_ms,
        b.cpu_ms);
    fflush (stdout);
    best_a.wall_ms = MIN (best_a.wall_ms, a.wall_ms);
    best_a.cpu_ms = MIN (best_a.cpu_ms, a.cpu_ms);
    best_b.wall_ms = MIN (best_b.wall_ms, b.wall_ms);
    best_b.cpu_ms = MIN (best_b.cpu_ms, b.cpu_ms);
  }
  printf ("%d timed frames of %d×%d I420, best of %d: libehat %.1f ms/frame, "
      "element %.1f ms/frame → element overhead %+.1f %% wall, %+.1f %% "
      "CPU\n", MAX (n - 1, 1), w, h, repeat, best_a.wall_ms, best_b.wall_ms,
      100.0 * (best_b.wall_ms / best_a.wall_ms - 1.0),
      100.0 * (best_b.cpu_ms / best_a.cpu_ms - 1.0));
  for (i = 0; i < n; i++)
    gst_buffer_unref (frames[i]);
  g_free (frames);
  ehat_engine_free (engine);
  ehat_model_unref (model);
  return 0;
}
