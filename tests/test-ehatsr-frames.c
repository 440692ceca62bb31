/* The ehatsr element on real frames: a crop of a Vid4 video frame from
 * ../shared/data pushed through the element must give exactly what
 * `ehat upscale` gives for the same PNG (same library, same tiler, same
 * defaults), in RGB and in a padded BGR order, tiled and with the
 * self-ensemble; and two ehatsr elements in
 * one pipeline (chained, and on two tee branches running at once) must each
 * produce every frame.
 *
 * Needs EHAT_SHARED_DATA, EHAT_MODELS_DIR, EHAT_CLI and GST_PLUGIN_PATH.
 * EHAT_TEST_BACKEND names the backend of the element and the CLI alike
 * (default cpu; the cuda-emu suite runs it with cuda on the emulated
 * device, kernels/emu). */
#include <gst/gst.h>
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/video/video.h>

#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>

#include "ehat-png.h"

#define CROP_W 96
#define CROP_H 72

/* the backend under test: cpu, or cuda (an emulated device in CI) */
static const char *
backend (void)
{
  const char *b = g_getenv ("EHAT_TEST_BACKEND");
  return b && *b ? b : "cpu";
}

static gchar *
env_path (const char *var, const char *rel)
{
  const gchar *dir = g_getenv (var);

  fail_unless (dir != NULL, "%s not set", var);
  return g_build_filename (dir, rel, NULL);
}

/* A CROP_W×CROP_H crop at (x0, y0) of a real frame, written to a PNG so the
 * CLI reads the very same pixels. */
static guint8 *
real_crop (const char *frame, int x0, int y0, const char *png_out)
{
  gchar *path = env_path ("EHAT_SHARED_DATA", frame);
  GError *err = NULL;
  guint8 *rgb, *crop;
  int w, h, y;

  fail_unless (ehat_png_read (path, &rgb, &w, &h, &err), "%s: %s", path,
      err ? err->message : "?");
  fail_unless (w >= x0 + CROP_W && h >= y0 + CROP_H);
  crop = g_malloc ((gsize) CROP_W * CROP_H * 3);
  for (y = 0; y < CROP_H; y++)
    memcpy (crop + (gsize) y * CROP_W * 3,
        rgb + ((gsize) (y0 + y) * w + x0) * 3, CROP_W * 3);
  fail_unless (ehat_png_write (png_out, crop, CROP_W, CROP_H, &err), "%s",
      err ? err->message : "?");
  g_free (rgb);
  g_free (path);
  return crop;
}

static guint8 *
cli_upscale (const char *model, const char *in_png, const char *out_png,
    const char *tile_size, const char *ensemble, int *ow, int *oh)
{
  const gchar *cli = g_getenv ("EHAT_CLI");
  /* NULL-terminated: room for the 8 fixed arguments, 4 optional ones and
   * the terminator */
  const gchar *argv[13] = { cli, "upscale", "--backend", backend (), "--model",
    model, in_png, out_png
  };
  int argc = 8;
  gchar *err_out = NULL;
  gint status = 0;
  GError *err = NULL;
  guint8 *rgb;

  fail_unless (cli != NULL, "EHAT_CLI not set");
  if (tile_size) {
    argv[argc++] = "--tile-size";
    argv[argc++] = tile_size;
  }
  if (ensemble) {
    argv[argc++] = "--ensemble";
    argv[argc++] = ensemble;
  }
  g_assert (argc < (int) G_N_ELEMENTS (argv));
  fail_unless (g_spawn_sync (NULL, (gchar **) argv, NULL,
          G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, NULL, &err_out, &status,
          &err), "%s", err ? err->message : "?");
  fail_unless (g_spawn_check_wait_status (status, NULL), "ehat upscale: %s",
      err_out);
  g_free (err_out);
  fail_unless (ehat_png_read (out_png, &rgb, ow, oh, &err), "%s",
      err ? err->message : "?");
  return rgb;
}

/* Pack RGB into the layout of @format (RGB or BGRx) with @stride. */
static GstBuffer *
pack_frame (const guint8 *rgb, const char *format, GstVideoInfo *info)
{
  GstBuffer *buf = gst_buffer_new_allocate (NULL, info->size, NULL);
  GstVideoFrame f;
  gboolean bgrx = g_str_equal (format, "BGRx");
  int x, y, bpp = bgrx ? 4 : 3;

  fail_unless (gst_video_frame_map (&f, info, buf, GST_MAP_WRITE));
  for (y = 0; y < info->height; y++) {
    guint8 *row = (guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&f, 0)
        + (gsize) y * GST_VIDEO_FRAME_PLANE_STRIDE (&f, 0);
    for (x = 0; x < info->width; x++) {
      const guint8 *p = rgb + ((gsize) y * info->width + x) * 3;
      row[x * bpp + 0] = p[bgrx ? 2 : 0];
      row[x * bpp + 1] = p[1];
      row[x * bpp + 2] = p[bgrx ? 0 : 2];
      if (bgrx)
        row[x * bpp + 3] = 0xff;
    }
  }
  gst_video_frame_unmap (&f);
  return buf;
}

/* Largest per-channel difference between the element's output frame and
 * the CLI's RGB image. */
static int
max_diff (GstBuffer *out, GstCaps *caps, const guint8 *rgb, int w, int h)
{
  GstVideoInfo info;
  GstVideoFrame f;
  gboolean bgrx;
  int x, y, c, bpp, worst = 0;

  fail_unless (gst_video_info_from_caps (&info, caps));
  fail_unless_equals_int (info.width, w);
  fail_unless_equals_int (info.height, h);
  bgrx = GST_VIDEO_INFO_FORMAT (&info) == GST_VIDEO_FORMAT_BGRx;
  bpp = bgrx ? 4 : 3;
  fail_unless (gst_video_frame_map (&f, &info, out, GST_MAP_READ));
  for (y = 0; y < h; y++) {
    const guint8 *row = (const guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&f, 0)
        + (gsize) y * GST_VIDEO_FRAME_PLANE_STRIDE (&f, 0);
    for (x = 0; x < w; x++)
      for (c = 0; c < 3; c++) {
        int cc = bgrx ? 2 - c : c;
        int d = abs ((int) row[x * bpp + cc] - rgb[((gsize) y * w + x) * 3
                + c]);
        worst = MAX (worst, d);
      }
  }
  gst_video_frame_unmap (&f);
  return worst;
}

/* Two consecutive Vid4 frames through one element instance (the engine and
 * tiler plan are reused across frames), each compared with the CLI. */
static void
check_real_frames (const char *format, const char *tile_size,
    const char *ensemble)
{
  static const char *frames[] = { "video/vid4-calendar/frame_001.png",
    "video/vid4-calendar/frame_002.png"
  };
  gchar *model = env_path ("EHAT_MODELS_DIR", "ehat-fast-x2.safetensors");
  gchar *tmp = g_dir_make_tmp ("ehatsr-frames-XXXXXX", NULL);
  GstElement *e = gst_element_factory_make ("ehatsr", NULL);
  GstHarness *hr;
  GstVideoInfo info;
  gchar *caps;
  guint i;

  fail_unless (e != NULL && tmp != NULL);
  g_object_set (e, "model", model, NULL);
  gst_util_set_object_arg (G_OBJECT (e), "backend", backend ());
  if (tile_size)
    g_object_set (e, "tile-size", atoi (tile_size), NULL);
  if (ensemble)
    g_object_set (e, "ensemble", (guint) atoi (ensemble), NULL);
  hr = gst_harness_new_with_element (e, "sink", "src");
  gst_object_unref (e);
  caps = g_strdup_printf ("video/x-raw,format=%s,width=%d,height=%d,"
      "framerate=25/1,pixel-aspect-ratio=1/1", format, CROP_W, CROP_H);
  gst_harness_set_src_caps_str (hr, caps);
  fail_unless (gst_video_info_from_caps (&info,
          gst_caps_from_string (caps)));

  for (i = 0; i < G_N_ELEMENTS (frames); i++) {
    gchar *in_png = g_build_filename (tmp, "in.png", NULL);
    gchar *out_png = g_build_filename (tmp, "out.png", NULL);
    /* a textured region of the calendar (lettering, edges) */
    guint8 *crop = real_crop (frames[i], 300, 200, in_png);
    int ow, oh, d;
    guint8 *ref = cli_upscale (model, in_png, out_png, tile_size, ensemble,
        &ow, &oh);
    GstBuffer *in = pack_frame (crop, format, &info), *out;
    GstCaps *ocaps;

    GST_BUFFER_PTS (in) = i * 40 * GST_MSECOND;
    out = gst_harness_push_and_pull (hr, in);
    fail_unless (out != NULL);
    fail_unless_equals_uint64 (GST_BUFFER_PTS (out), i * 40 * GST_MSECOND);
    ocaps = gst_pad_get_current_caps (hr->sinkpad);
    fail_unless_equals_int (ow, CROP_W * 2);
    fail_unless_equals_int (oh, CROP_H * 2);
    d = max_diff (out, ocaps, ref, ow, oh);
    /* Same library and tiler on the same pixels: identical bytes. */
    fail_unless (d == 0, "%s frame %u (tile-size %s, ensemble %s): element "
        "differs from ehat upscale by up to %d levels", format, i,
        tile_size ? tile_size : "auto", ensemble ? ensemble : "1", d);
    gst_caps_unref (ocaps);
    gst_buffer_unref (out);
    g_free (ref);
    g_free (crop);
    g_unlink (out_png);
    g_unlink (in_png);
    g_free (out_png);
    g_free (in_png);
  }
  gst_harness_teardown (hr);
  g_rmdir (tmp);
  g_free (tmp);
  g_free (caps);
  g_free (model);
}

GST_START_TEST (test_real_frames_match_cli)
{
  check_real_frames ("RGB", NULL, NULL);
  check_real_frames ("BGRx", NULL, NULL);
  /* several tiles per frame: the blend is the tiler's, not the element's */
  check_real_frames ("RGB", "32", NULL);
  /* the self-ensemble, per tile, as the library and the CLI do it */
  check_real_frames ("BGRx", "32", "4");
}

GST_END_TEST;

typedef struct
{
  gint frames;
  gint width, height;
} SinkCount;

static GstFlowReturn
on_sample (GstElement * sink, SinkCount * c)
{
  GstSample *s = NULL;
  GstStructure *st;

  g_signal_emit_by_name (sink, "pull-sample", &s);
  fail_unless (s != NULL);
  st = gst_caps_get_structure (gst_sample_get_caps (s), 0);
  gst_structure_get_int (st, "width", &c->width);
  gst_structure_get_int (st, "height", &c->height);
  g_atomic_int_inc (&c->frames);
  gst_sample_unref (s);
  return GST_FLOW_OK;
}

/* Runs @desc to EOS; its appsinks are named s0, s1, … */
static void
run_pipeline (const char *desc, int n_sinks, SinkCount * counts)
{
  GError *err = NULL;
  GstElement *p = gst_parse_launch (desc, &err);
  GstBus *bus;
  GstMessage *msg;
  int i;

  fail_unless (p != NULL, "%s", err ? err->message : "?");
  for (i = 0; i < n_sinks; i++) {
    gchar *name = g_strdup_printf ("s%d", i);
    GstElement *sink = gst_bin_get_by_name (GST_BIN (p), name);

    fail_unless (sink != NULL);
    g_object_set (sink, "emit-signals", TRUE, "sync", FALSE, NULL);
    g_signal_connect (sink, "new-sample", G_CALLBACK (on_sample), &counts[i]);
    gst_object_unref (sink);
    g_free (name);
  }
  fail_unless (gst_element_set_state (p, GST_STATE_PLAYING)
      != GST_STATE_CHANGE_FAILURE);
  bus = gst_element_get_bus (p);
  msg = gst_bus_timed_pop_filtered (bus, 240 * GST_SECOND,
      GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  fail_unless (msg != NULL, "pipeline timed out");
  if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR) {
    GError *e = NULL;
    gst_message_parse_error (msg, &e, NULL);
    fail ("pipeline error: %s", e->message);
  }
  gst_message_unref (msg);
  gst_object_unref (bus);
  gst_element_set_state (p, GST_STATE_NULL);
  gst_object_unref (p);
}

GST_START_TEST (test_two_elements_chained)
{
  gchar *model = env_path ("EHAT_MODELS_DIR", "ehat-fast-x2.safetensors");
  gchar *desc = g_strdup_printf ("videotestsrc num-buffers=3 pattern=ball ! "
      "video/x-raw,format=I420,width=24,height=16,framerate=10/1 ! "
      "ehatsr model=%s backend=%s ! ehatsr model=%s backend=%s ! "
      "appsink name=s0", model, backend (), model, backend ());
  SinkCount c = { 0 };

  run_pipeline (desc, 1, &c);
  fail_unless_equals_int (c.frames, 3);
  fail_unless_equals_int (c.width, 96);
  fail_unless_equals_int (c.height, 64);
  g_free (desc);
  g_free (model);
}

GST_END_TEST;

GST_START_TEST (test_two_elements_parallel)
{
  /* two instances at once on two tee branches, with different models and
   * scales: engines are per instance, nothing shared is mutated */
  gchar *m2 = env_path ("EHAT_MODELS_DIR", "ehat-fast-x2.safetensors");
  gchar *m4 = env_path ("EHAT_MODELS_DIR", "ehat-fast-x4.safetensors");
  gchar *desc = g_strdup_printf ("videotestsrc num-buffers=4 pattern=snow ! "
      "video/x-raw,format=RGB,width=40,height=36,framerate=10/1 ! tee name=t "
      "t. ! queue ! ehatsr model=%s backend=%s ! appsink name=s0 "
      "t. ! queue ! ehatsr model=%s backend=%s tile-size=32 ! "
      "appsink name=s1", m2, backend (), m4, backend ());
  SinkCount c[2] = { {0}, {0} };

  run_pipeline (desc, 2, c);
  fail_unless_equals_int (c[0].frames, 4);
  fail_unless_equals_int (c[1].frames, 4);
  fail_unless_equals_int (c[0].width, 80);
  fail_unless_equals_int (c[0].height, 72);
  fail_unless_equals_int (c[1].width, 160);
  fail_unless_equals_int (c[1].height, 144);
  g_free (desc);
  g_free (m4);
  g_free (m2);
}

GST_END_TEST;

static Suite *
ehatsr_frames_suite (void)
{
  Suite *s = suite_create ("ehatsr-frames");
  TCase *tc = tcase_create ("general");

  tcase_set_timeout (tc, 300);
  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_real_frames_match_cli);
  tcase_add_test (tc, test_two_elements_chained);
  tcase_add_test (tc, test_two_elements_parallel);
  return s;
}

/* Only the system plugins this test needs (coreelements, app,
 * videotestsrc) are made visible, through a directory of links: a full
 * scan would load every installed plugin into the process (the ASan run
 * scans in-process, GST_REGISTRY_FORK=no) and report third-party leaks
 * (libudev, fontconfig, OpenNI2 drivers) that are not ours. */
static gchar *
limit_system_plugins (void)
{
  static const char *needed[] = { "libgstcoreelements.so", "libgstapp.so",
    "libgstvideotestsrc.so"
  };
  const gchar *sys = g_getenv ("EHAT_GST_SYSTEM_PLUGINS");
  gchar *dir;
  guint i;

  if (!sys)
    return NULL;
  /* before gst_check_init: plain checks, not fail_unless */
  dir = g_dir_make_tmp ("ehatsr-frames-plugins-XXXXXX", NULL);
  g_assert_nonnull (dir);
  for (i = 0; i < G_N_ELEMENTS (needed); i++) {
    gchar *from = g_build_filename (sys, needed[i], NULL);
    gchar *to = g_build_filename (dir, needed[i], NULL);

    if (symlink (from, to) != 0) {
      g_printerr ("symlink %s → %s: %s\n", from, to, g_strerror (errno));
      return NULL;
    }
    g_free (to);
    g_free (from);
  }
  g_setenv ("GST_PLUGIN_SYSTEM_PATH_1_0", dir, TRUE);
  return dir;
}

static void
remove_plugin_links (gchar *dir)
{
  GDir *d;
  const gchar *name;

  if (!dir)
    return;
  d = g_dir_open (dir, 0, NULL);
  while (d && (name = g_dir_read_name (d))) {
    gchar *p = g_build_filename (dir, name, NULL);
    g_unlink (p);
    g_free (p);
  }
  if (d)
    g_dir_close (d);
  g_rmdir (dir);
  g_free (dir);
}

int
main (int argc, char **argv)
{
  gchar *plugins = limit_system_plugins ();
  int failed;

  gst_check_init (&argc, &argv);
  failed = gst_check_run_suite (ehatsr_frames_suite (), "ehatsr-frames",
      __FILE__);
  remove_plugin_links (plugins);
  return failed;
}
