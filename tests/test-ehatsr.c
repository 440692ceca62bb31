/* The ehatsr element: negotiation, properties, errors, timestamps, metas.
 * Needs GST_PLUGIN_PATH to the built plugin and EHAT_GOLDEN_DIR. */
#include <gst/gst.h>
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/video/video.h>

#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

static const char *all_formats[] = {
  "RGB", "BGR", "RGBA", "BGRA", "RGBx", "BGRx", "xRGB", "xBGR", "ARGB",
  "ABGR", "I420", "YV12", "NV12", "NV21", "Y444", "GRAY8", "I420_10LE",
  "P010_10LE", "Y42B", "NV16", "I422_10LE", "I422_12LE", "Y444_10LE",
  "Y444_12LE", "Y444_16LE", "I420_12LE", "P012_LE", "P016_LE", "GRAY16_LE",
  "GBR", "GBR_10LE", "GBR_12LE", "YUY2", "UYVY", "YVYU", "Y210", "Y212_LE",
  "AYUV", "VUYA", "AYUV64", "RGBA64_LE", "BGRA64_LE", "ARGB64_LE",
  "ABGR64_LE", "ARGB64", "A420", "A420_10LE", "A422_10LE", "A444_10LE",
  "GBRA", "GBRA_10LE", "GBRA_12LE", "v210",
  "NV24", "NV61", "VYUY", "Y410", "Y412_LE",
};

/* golden case per scale */
static const char *scale_cases[5] = { NULL, NULL, "hat-tiny-x2",
  "hat-small-x3", "hat-small-x4"
};

static gchar *
golden_model (int scale)
{
  const gchar *dir = g_getenv ("EHAT_GOLDEN_DIR");

  fail_unless (dir != NULL, "EHAT_GOLDEN_DIR not set");
  return g_build_filename (dir, scale_cases[scale], "model.safetensors",
      NULL);
}

static GstHarness *
harness_new_for_scale (int scale)
{
  gchar *model = golden_model (scale);
  GstElement *e = gst_element_factory_make ("ehatsr", NULL);
  GstHarness *hr;

  /* properties before the harness starts the element */
  g_object_set (e, "model", model, "backend", 2 /* cpu */ , NULL);
  hr = gst_harness_new_with_element (e, "sink", "src");
  gst_object_unref (e);
  g_free (model);
  return hr;
}

static GstHarness *
harness_for (int scale, const char *format, int w, int h)
{
  GstHarness *hr = harness_new_for_scale (scale);
  gchar *caps = g_strdup_printf ("video/x-raw,format=%s,width=%d,height=%d,"
      "framerate=25/1,pixel-aspect-ratio=1/1", format, w, h);

  gst_harness_set_src_caps_str (hr, caps);
  g_free (caps);
  return hr;
}

static GstBuffer *
make_frame (const char *caps_str, guint8 fill)
{
  GstCaps *caps = gst_caps_from_string (caps_str);
  GstVideoInfo info;
  GstBuffer *buf;

  fail_unless (gst_video_info_from_caps (&info, caps));
  gst_caps_unref (caps);
  buf = gst_buffer_new_allocate (NULL, GST_VIDEO_INFO_SIZE (&info), NULL);
  gst_buffer_memset (buf, 0, fill, GST_VIDEO_INFO_SIZE (&info));
  gst_buffer_add_video_meta_full (buf, GST_VIDEO_FRAME_FLAG_NONE,
      GST_VIDEO_INFO_FORMAT (&info), info.width, info.height,
      GST_VIDEO_INFO_N_PLANES (&info), info.offset, info.stride);
  return buf;
}

static void
check_frame (int scale, const char *format, int w, int h)
{
  GstHarness *hr = harness_for (scale, format, w, h);
  gchar *caps_str = g_strdup_printf ("video/x-raw,format=%s,width=%d,"
      "height=%d", format, w, h);
  GstBuffer *in = make_frame (caps_str, 0x80), *out;
  GstCaps *ocaps;
  GstVideoInfo oinfo;
  GstStructure *s;
  gint ow, oh, n, d;

  GST_BUFFER_PTS (in) = 40 * GST_MSECOND;
  out = gst_harness_push_and_pull (hr, in);
  fail_unless (out != NULL, "%s ×%d: no output", format, scale);
  ocaps = gst_pad_get_current_caps (hr->sinkpad);
  fail_unless (ocaps != NULL);
  s = gst_caps_get_structure (ocaps, 0);
  fail_unless (gst_structure_get_int (s, "width", &ow));
  fail_unless (gst_structure_get_int (s, "height", &oh));
  fail_unless_equals_int (ow, w * scale);
  fail_unless_equals_int (oh, h * scale);
  fail_unless_equals_string (gst_structure_get_string (s, "format"), format);
  fail_unless (gst_structure_get_fraction (s, "framerate", &n, &d));
  fail_unless (n == 25 && d == 1);
  fail_unless (gst_structure_get_fraction (s, "pixel-aspect-ratio", &n, &d));
  fail_unless (n == 1 && d == 1);
  fail_unless (gst_video_info_from_caps (&oinfo, ocaps));
  fail_unless (gst_buffer_get_size (out) >= GST_VIDEO_INFO_SIZE (&oinfo));

  /* alpha goes around the network: constant in, constant out (0x80
   * bytes: 0x8080 in 16-bit words, its low bits at 10 or 12 bits) */
  if (GST_VIDEO_INFO_HAS_ALPHA (&oinfo)) {
    GstVideoFrame f;
    int x, y, a = GST_VIDEO_FORMAT_INFO_POFFSET (oinfo.finfo, 3);
    int ps = GST_VIDEO_INFO_COMP_PSTRIDE (&oinfo, 3);
    int pl = GST_VIDEO_INFO_COMP_PLANE (&oinfo, 3);
    gboolean deep = GST_VIDEO_INFO_COMP_DEPTH (&oinfo, 3) > 8;

    fail_unless (gst_video_frame_map (&f, &oinfo, out, GST_MAP_READ));
    for (y = 0; y < oh; y++)
      for (x = 0; x < ow; x++) {
        const guint8 *p = (guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&f, pl)
            + y * GST_VIDEO_FRAME_PLANE_STRIDE (&f, pl) + ps * x + a;

        fail_unless_equals_int (deep ? p[0] | p[1] << 8 : p[0],
            deep ? 0x8080 & ((1 << GST_VIDEO_INFO_COMP_DEPTH (&oinfo, 3)) - 1)
            : 0x80);
      }
    gst_video_frame_unmap (&f);
  }
  gst_caps_unref (ocaps);
  gst_buffer_unref (out);
  g_free (caps_str);
  gst_harness_teardown (hr);
}

static void
check_negotiation (int scale, const char *format)
{
  check_frame (scale, format, 13, 10);
}

/* Odd and tiny frames through the element (the network reflect-pads them),
 * and a 1921×1081 frame's caps (too slow to push through a CPU test). */
GST_START_TEST (test_odd_sizes)
{
  static const int sizes[][2] = { {1, 1}, {3, 5}, {1, 9}, {7, 2} };
  static const char *formats[] = { "RGB", "I420", "NV12", "Y444", "YUY2",
    "AYUV64", "v210"
  };
  GstHarness *hr;
  GstPad *src;
  GstCaps *out;
  GstStructure *st;
  gint ow, oh;

  for (guint i = 0; i < G_N_ELEMENTS (sizes); i++)
    for (guint f = 0; f < G_N_ELEMENTS (formats); f++)
      check_frame (2, formats[f], sizes[i][0], sizes[i][1]);

  /* ×3 of 1921×1081: what the element offers downstream once upstream
   * has set those caps */
  hr = harness_new_for_scale (3);
  gst_harness_set_src_caps_str (hr, "video/x-raw,format=I420,width=1921,"
      "height=1081,framerate=25/1,pixel-aspect-ratio=1/1");
  src = gst_element_get_static_pad (hr->element, "src");
  out = gst_caps_fixate (gst_pad_query_caps (src, NULL));
  st = gst_caps_get_structure (out, 0);
  fail_unless (gst_structure_get_int (st, "width", &ow));
  fail_unless (gst_structure_get_int (st, "height", &oh));
  fail_unless_equals_int (ow, 1921 * 3);
  fail_unless_equals_int (oh, 1081 * 3);
  gst_caps_unref (out);
  gst_object_unref (src);
  gst_harness_teardown (hr);
}

GST_END_TEST;

GST_START_TEST (test_negotiation_all_formats)
{
  guint i;
  int scale;

  for (scale = 2; scale <= 4; scale++)
    for (i = 0; i < G_N_ELEMENTS (all_formats); i++)
      check_negotiation (scale, all_formats[i]);
}

GST_END_TEST;

static gboolean
caps_match (GstCaps * caps, const gchar * str)
{
  GstCaps *other = gst_caps_from_string (str);
  gboolean ret = gst_caps_can_intersect (caps, other);

  gst_caps_unref (other);
  return ret;
}

/* What upstream may send when downstream accepts only `sink`. */
static GstCaps *
upstream_caps (GstHarness * hr, const gchar * sink)
{
  gst_harness_set_sink_caps_str (hr, sink);
  return gst_pad_peer_query_caps (hr->srcpad, NULL);
}

GST_START_TEST (test_caps_transform)
{
  GstHarness *hr = harness_new_for_scale (3);
  GstCaps *caps;
  GstStructure *s;
  gint v;

  /* downstream wants 90x60 → upstream is asked for 30x20 */
  caps = upstream_caps (hr, "video/x-raw,format=I420,width=90,"
      "height=60,framerate=30/1");
  fail_unless_equals_int (gst_caps_get_size (caps), 1);
  s = gst_caps_get_structure (caps, 0);
  fail_unless (gst_structure_get_int (s, "width", &v));
  fail_unless_equals_int (v, 30);
  fail_unless (gst_structure_get_int (s, "height", &v));
  fail_unless_equals_int (v, 20);
  gst_caps_unref (caps);

  /* 91 is not a multiple of 3: nothing upstream can produce it */
  caps = upstream_caps (hr, "video/x-raw,format=I420,width=91,"
      "height=60");
  fail_unless (gst_caps_is_empty (caps));
  gst_caps_unref (caps);

  /* a range maps to a range */
  caps = upstream_caps (hr, "video/x-raw,format=I420,"
      "width=[10,100],height=[3,9]");
  /* (basetransform also offers the downstream caps themselves first) */
  fail_unless (caps_match (caps, ("video/x-raw,width=4,height=3")));
  fail_unless (caps_match (caps, ("video/x-raw,width=33,height=1")));
  fail_if (caps_match (caps, ("video/x-raw,width=34,height=3")));
  fail_if (caps_match (caps, ("video/x-raw,width=4,height=4")));
  gst_caps_unref (caps);

  /* a range holding one multiple maps to that one size; a list maps
   * value by value, dropping what does not divide */
  caps = upstream_caps (hr, "video/x-raw,format=I420,"
      "width={ 91, 60, 90 },height=[61,65]");
  fail_unless (caps_match (caps, ("video/x-raw,width=20,height=21")));
  fail_unless (caps_match (caps, ("video/x-raw,width=30,height=21")));
  fail_if (caps_match (caps, ("video/x-raw,width=40,height=21")));
  fail_if (caps_match (caps, ("video/x-raw,width=30,height=22")));
  s = gst_caps_get_structure (caps, gst_caps_get_size (caps) - 1);
  fail_unless (gst_structure_get_int (s, "height", &v));
  fail_unless_equals_int (v, 21);
  gst_caps_unref (caps);

  /* a list of which nothing maps, like a single such size */
  caps = upstream_caps (hr, "video/x-raw,format=I420,"
      "width={ 91, 92 },height=60");
  fail_unless (gst_caps_is_empty (caps));
  gst_caps_unref (caps);

  /* the read-only scale is that of the loaded model */
  g_object_get (hr->element, "scale", &v, NULL);
  fail_unless_equals_int (v, 3);
  gst_harness_teardown (hr);
}

GST_END_TEST;

GST_START_TEST (test_properties)
{
  GstElement *e = gst_element_factory_make ("ehatsr", NULL);
  GObjectClass *klass = G_OBJECT_GET_CLASS (e);
  GParamSpecInt *ip;
  gchar *model;
  gint backend, precision, tile, overlap, dev, scale;
  GstStructure *stats;
  guint64 frames;

  fail_unless (e != NULL);
  g_object_get (e, "model", &model, "backend", &backend, "precision",
      &precision, "tile-size", &tile, "tile-overlap", &overlap, "device-id",
      &dev, "scale", &scale, "stats", &stats, NULL);
  fail_unless (g_str_has_suffix (model,
          "ehatsr/models/ehat-fast-x2.safetensors"), "default model %s",
      model);
  fail_unless_equals_int (backend, 0);
  fail_unless_equals_int (precision, 0);
  fail_unless_equals_int (tile, 0);
  fail_unless_equals_int (overlap, 16);
  fail_unless_equals_int (dev, 0);
  fail_unless_equals_int (scale, 0);
  fail_unless (gst_structure_get_uint64 (stats, "frames", &frames));
  fail_unless (frames == 0);
  fail_unless (gst_structure_has_field (stats, "mean-ms"));
  fail_unless (gst_structure_has_field (stats, "last-ms"));
  fail_unless (gst_structure_has_field (stats, "tiles"));
  /* no engine before the start */
  fail_unless_equals_string (gst_structure_get_string (stats, "backend"),
      "none");
  fail_unless_equals_string (gst_structure_get_string (stats, "precision"),
      "none");
  gst_structure_free (stats);
  g_free (model);

  ip = G_PARAM_SPEC_INT (g_object_class_find_property (klass, "tile-size"));
  fail_unless_equals_int (ip->minimum, 0);
  fail_unless_equals_int (ip->default_value, 0);
  {
    gint fallback;
    gboolean post, qos;

    g_object_get (e, "qos-fallback", &fallback, "post-messages", &post,
        "qos", &qos, NULL);
    fail_unless_equals_int (fallback, 0);
    fail_if (post);
    fail_unless (qos);
    fail_unless (g_object_class_find_property (klass, "qos-fallback")->flags
        & GST_PARAM_MUTABLE_PLAYING);
  }
  fail_unless ((g_object_class_find_property (klass, "scale")->flags &
          G_PARAM_WRITABLE) == 0);
  fail_unless ((g_object_class_find_property (klass, "stats")->flags &
          G_PARAM_WRITABLE) == 0);

  g_object_set (e, "tile-size", 64, "tile-overlap", 8, NULL);
  g_object_get (e, "tile-size", &tile, "tile-overlap", &overlap, NULL);
  fail_unless_equals_int (tile, 64);
  fail_unless_equals_int (overlap, 8);
  {
    /* self-ensemble: 1 (off) by default; 1, 2, 4 or 8, others round down */
    static const guint set[] = { 8, 2, 5, 7, 3, 1 }, want[] = { 8, 2, 4, 4,
      2, 1
    };
    guint n;

    g_object_get (e, "ensemble", &n, NULL);
    fail_unless_equals_int (n, 1);
    fail_unless (g_object_class_find_property (klass, "ensemble")->flags
        & GST_PARAM_MUTABLE_PLAYING);
    for (guint i = 0; i < G_N_ELEMENTS (set); i++) {
      g_object_set (e, "ensemble", set[i], NULL);
      g_object_get (e, "ensemble", &n, NULL);
      fail_unless_equals_int (n, want[i]);
    }
  }
  gst_object_unref (e);
}

GST_END_TEST;

static void
expect_model_error (const gchar * path)
{
  GstElement *e = gst_element_factory_make ("ehatsr", NULL);
  GstBus *bus = gst_bus_new ();
  GstMessage *msg;
  GError *err = NULL;

  gst_element_set_bus (e, bus);
  g_object_set (e, "model", path, NULL);
  fail_unless_equals_int (gst_element_set_state (e, GST_STATE_PAUSED),
      GST_STATE_CHANGE_FAILURE);
  msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);
  fail_unless (msg != NULL, "no error message for %s", path);
  gst_message_parse_error (msg, &err, NULL);
  fail_unless (err->domain == GST_RESOURCE_ERROR);
  fail_unless (strstr (err->message, path) != NULL, "message: %s",
      err->message);
  g_error_free (err);
  gst_message_unref (msg);
  gst_element_set_state (e, GST_STATE_NULL);
  gst_element_set_bus (e, NULL);
  gst_object_unref (bus);
  gst_object_unref (e);
}

GST_START_TEST (test_missing_model)
{
  gchar *tmp, *garbage;
  int fd;

  expect_model_error ("/nonexistent/model.safetensors");

  /* a corrupt file: error, not a crash */
  fd = g_file_open_tmp ("ehatsr-XXXXXX.safetensors", &tmp, NULL);
  fail_unless (fd >= 0);
  close (fd);
  garbage = g_strnfill (100, 'x');
  fail_unless (g_file_set_contents (tmp, garbage, -1, NULL));
  expect_model_error (tmp);
  g_unlink (tmp);
  g_free (tmp);
  g_free (garbage);
}

GST_END_TEST;

/* Interleaved fields: refused with a clear error.  A mixed stream: taken,
 * with one warning at its first interlaced frame. */
GST_START_TEST (test_interlaced)
{
  GstHarness *hr = harness_new_for_scale (2);
  GstBus *bus = gst_bus_new ();
  GstMessage *msg;
  GError *err = NULL;
  gchar *debug = NULL;
  GstBuffer *in, *out;
  const gchar *caps = "video/x-raw,format=I420,width=16,height=12,"
      "framerate=25/1,interlace-mode=interleaved";

  gst_element_set_bus (hr->element, bus);
  gst_harness_set_src_caps_str (hr, caps);
  in = make_frame (caps, 0x40);
  fail_unless (gst_harness_push (hr, in) != GST_FLOW_OK);
  msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);
  fail_unless (msg != NULL, "no error for interleaved fields");
  gst_message_parse_error (msg, &err, &debug);
  fail_unless (err->domain == GST_STREAM_ERROR);
  fail_unless (strstr (err->message, "Interlaced video is not supported"),
      "message: %s", err->message);
  fail_unless (strstr (debug, "deinterlace"), "debug: %s", debug);
  g_clear_error (&err);
  g_clear_pointer (&debug, g_free);
  gst_message_unref (msg);
  gst_element_set_bus (hr->element, NULL);
  gst_harness_teardown (hr);

  hr = harness_new_for_scale (2);
  gst_element_set_bus (hr->element, bus);
  caps = "video/x-raw,format=I420,width=16,height=12,framerate=25/1,"
      "interlace-mode=mixed";
  gst_harness_set_src_caps_str (hr, caps);
  for (int i = 0; i < 3; i++) {
    in = make_frame (caps, 0x40);
    GST_BUFFER_PTS (in) = i * 40 * GST_MSECOND;
    if (i > 0)
      GST_BUFFER_FLAG_SET (in, GST_VIDEO_BUFFER_FLAG_INTERLACED);
    out = gst_harness_push_and_pull (hr, in);
    fail_unless (out != NULL, "mixed stream: no output for frame %d", i);
    gst_buffer_unref (out);
  }
  msg = gst_bus_pop_filtered (bus, GST_MESSAGE_WARNING);
  fail_unless (msg != NULL, "no warning for an interlaced frame");
  gst_message_parse_warning (msg, &err, &debug);
  fail_unless (strstr (err->message, "upscaled as progressive"), "message: %s",
      err->message);
  fail_unless (strstr (debug, "0:00:00.040000000"), "debug: %s", debug);
  g_clear_error (&err);
  g_clear_pointer (&debug, g_free);
  gst_message_unref (msg);
  /* once, not per frame */
  fail_unless (gst_bus_pop_filtered (bus, GST_MESSAGE_WARNING) == NULL);
  fail_unless (gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR) == NULL);
  gst_element_set_bus (hr->element, NULL);
  gst_object_unref (bus);
  gst_harness_teardown (hr);
}

GST_END_TEST;

GST_START_TEST (test_timestamps_and_stats)
{
  GstHarness *hr = harness_for (2, "I420", 16, 12);
  const char *caps = "video/x-raw,format=I420,width=16,height=12";
  GstStructure *stats;
  guint64 frames;
  gint tiles;
  int i;

  for (i = 0; i < 3; i++) {
    GstBuffer *in = make_frame (caps, 0x40 * i), *out;

    GST_BUFFER_PTS (in) = (1 + i) * GST_SECOND;
    GST_BUFFER_DTS (in) = i * GST_SECOND;
    GST_BUFFER_DURATION (in) = 40 * GST_MSECOND;
    GST_BUFFER_OFFSET (in) = i;
    if (i == 1)
      GST_BUFFER_FLAG_SET (in, GST_BUFFER_FLAG_DISCONT);
    out = gst_harness_push_and_pull (hr, in);
    fail_unless (out != NULL);
    fail_unless_equals_uint64 (GST_BUFFER_PTS (out), (1 + i) * GST_SECOND);
    fail_unless_equals_uint64 (GST_BUFFER_DTS (out), i * GST_SECOND);
    fail_unless_equals_uint64 (GST_BUFFER_DURATION (out), 40 * GST_MSECOND);
    fail_unless_equals_uint64 (GST_BUFFER_OFFSET (out), i);
    fail_unless_equals_int (GST_BUFFER_FLAG_IS_SET (out,
            GST_BUFFER_FLAG_DISCONT), i == 1);
    gst_buffer_unref (out);
  }
  g_object_get (hr->element, "stats", &stats, NULL);
  fail_unless (gst_structure_get_uint64 (stats, "frames", &frames));
  fail_unless (frames == 3);
  fail_unless (gst_structure_get_int (stats, "tiles", &tiles));
  fail_unless_equals_int (tiles, 1);
  gst_structure_free (stats);
  gst_harness_teardown (hr);
}

GST_END_TEST;

GST_START_TEST (test_roi_meta_scaled)
{
  GstHarness *hr = harness_for (4, "RGBx", 16, 12);
  GstBuffer *in = make_frame ("video/x-raw,format=RGBx,width=16,height=12",
      0), *out;
  GstVideoRegionOfInterestMeta *roi;

  gst_buffer_add_video_region_of_interest_meta (in, "face", 2, 3, 5, 4);
  out = gst_harness_push_and_pull (hr, in);
  fail_unless (out != NULL);
  roi = gst_buffer_get_video_region_of_interest_meta (out);
  fail_unless (roi != NULL);
  fail_unless_equals_int (roi->x, 8);
  fail_unless_equals_int (roi->y, 12);
  fail_unless_equals_int (roi->w, 20);
  fail_unless_equals_int (roi->h, 16);
  gst_buffer_unref (out);
  gst_harness_teardown (hr);
}

GST_END_TEST;

/* Tiles of the last frame through hr: their number, and their input size
 * into tile_width × tile_height when those are not NULL. */
static gint
last_geometry (GstHarness * hr, gint * tile_width, gint * tile_height)
{
  GstStructure *stats;
  gint tiles = -1, tw = -1, th = -1;

  g_object_get (hr->element, "stats", &stats, NULL);
  fail_unless (gst_structure_get_int (stats, "tiles", &tiles));
  fail_unless (gst_structure_get_int (stats, "tile-width", &tw));
  fail_unless (gst_structure_get_int (stats, "tile-height", &th));
  gst_structure_free (stats);
  if (tile_width)
    *tile_width = tw;
  if (tile_height)
    *tile_height = th;
  return tiles;
}

static gint
last_tiles (GstHarness * hr)
{
  return last_geometry (hr, NULL, NULL);
}

GST_START_TEST (test_tiled_frame)
{
  /* larger than a tile: the tiler runs inside the element */
  GstHarness *hr = harness_for (2, "NV12", 40, 24);
  GstBuffer *in = make_frame ("video/x-raw,format=NV12,width=40,height=24",
      0x60), *out;
  gint tiles, square_tiles, tw, th;

  g_object_set (hr->element, "tile-size", 16, "tile-overlap", 4, NULL);
  out = gst_harness_push_and_pull (hr, in);
  fail_unless (out != NULL);
  square_tiles = last_geometry (hr, &tw, &th);
  fail_unless (square_tiles > 1);
  fail_unless_equals_int (tw, 16);
  fail_unless_equals_int (th, 16);
  gst_buffer_unref (out);

  /* tile-height: one row of 16×24 tiles */
  g_object_set (hr->element, "tile-height", 24, NULL);
  out = gst_harness_push_and_pull (hr, make_frame
      ("video/x-raw,format=NV12,width=40,height=24", 0x60));
  fail_unless (out != NULL);
  tiles = last_geometry (hr, &tw, &th);
  fail_unless_equals_int (tw, 16);
  fail_unless_equals_int (th, 24);
  fail_unless (tiles > 1 && tiles < square_tiles, "%d tiles, %d square",
      tiles, square_tiles);
  gst_buffer_unref (out);
  gst_harness_teardown (hr);
}

GST_END_TEST;

GST_START_TEST (test_ape_model_tiles)
{
  /* A model with an absolute position embedding of 32×32 tokens runs any
   * larger frame in tiles of that size, also when a larger tile-size was
   * set (which could not run) */
  const gchar *dir = g_getenv ("EHAT_PROJECT_GOLDEN_DIR");
  const char *caps = "video/x-raw,format=I420,width=72,height=40";
  gchar *model;
  GstHarness *hr;
  GstBuffer *out;
  GstCaps *ocaps;
  GstVideoInfo info;
  gint tw, th;

  fail_unless (dir != NULL, "EHAT_PROJECT_GOLDEN_DIR not set");
  model = g_build_filename (dir, "ehat-ape-x2", "model.safetensors", NULL);
  for (int tile = 0; tile <= 64; tile += 64) {
    GstElement *e = gst_element_factory_make ("ehatsr", NULL);

    g_object_set (e, "model", model, "backend", 2 /* cpu */ ,
        "tile-size", tile, NULL);
    hr = gst_harness_new_with_element (e, "sink", "src");
    gst_object_unref (e);
    gst_harness_set_src_caps_str (hr, caps);
    out = gst_harness_push_and_pull (hr, make_frame (caps, 0x50));
    fail_unless (out != NULL, "tile-size %d: no output", tile);
    ocaps = gst_pad_get_current_caps (hr->sinkpad);
    fail_unless (ocaps != NULL && gst_video_info_from_caps (&info, ocaps));
    gst_caps_unref (ocaps);
    fail_unless_equals_int (GST_VIDEO_INFO_WIDTH (&info), 144);
    fail_unless_equals_int (GST_VIDEO_INFO_HEIGHT (&info), 80);
    fail_unless (last_geometry (hr, &tw, &th) >= 6);
    fail_unless_equals_int (tw, 32);
    fail_unless_equals_int (th, 32);
    gst_buffer_unref (out);
    gst_harness_teardown (hr);
  }
  g_free (model);
}

GST_END_TEST;

GST_START_TEST (test_model_change_renegotiates)
{
  GstHarness *hr = harness_for (2, "RGB", 12, 8);
  const char *caps = "video/x-raw,format=RGB,width=12,height=8";
  gchar *m3 = golden_model (3);
  GstBuffer *out;
  GstCaps *ocaps;
  gint w;

  out = gst_harness_push_and_pull (hr, make_frame (caps, 0x10));
  fail_unless (out != NULL);
  fail_unless_equals_int (gst_buffer_get_size (out), 24 * 16 * 3);
  gst_buffer_unref (out);

  g_object_set (hr->element, "model", m3, NULL);
  out = gst_harness_push_and_pull (hr, make_frame (caps, 0x10));
  fail_unless (out != NULL);
  ocaps = gst_pad_get_current_caps (hr->sinkpad);
  fail_unless (gst_structure_get_int (gst_caps_get_structure (ocaps, 0),
          "width", &w));
  fail_unless_equals_int (w, 36);
  fail_unless_equals_int (gst_buffer_get_size (out), 36 * 24 * 3);
  gst_caps_unref (ocaps);
  gst_buffer_unref (out);
  g_free (m3);
  gst_harness_teardown (hr);
}

GST_END_TEST;

/* A bus on the harnessed element, to see its messages. */
static GstBus *
harness_bus (GstHarness * hr)
{
  GstBus *bus = gst_bus_new ();

  gst_element_set_bus (hr->element, bus);
  return bus;
}

static GstBuffer *
timed_frame (const char *caps, guint8 fill, GstClockTime pts)
{
  GstBuffer *buf = make_frame (caps, fill);

  GST_BUFFER_PTS (buf) = pts;
  GST_BUFFER_DURATION (buf) = 40 * GST_MSECOND;
  return buf;
}

/* A QOS event as a sink 0.5 s behind would send: frames up to running time
 * 1.5 s are late. */
static void
send_late_qos (GstHarness * hr)
{
  fail_unless (gst_harness_push_upstream_event (hr,
          gst_event_new_qos (GST_QOS_TYPE_UNDERFLOW, 1.5, 500 * GST_MSECOND,
              1 * GST_SECOND)));
}

static gboolean
buffer_is_constant (GstBuffer * buf, guint8 value)
{
  GstMapInfo map;
  gboolean same = TRUE;
  gsize i;

  fail_unless (gst_buffer_map (buf, &map, GST_MAP_READ));
  for (i = 0; i < map.size && same; i++)
    same = map.data[i] == value;
  gst_buffer_unmap (buf, &map);
  return same;
}

GST_START_TEST (test_qos_drop)
{
  GstHarness *hr = harness_for (2, "RGB", 12, 8);
  const char *caps = "video/x-raw,format=RGB,width=12,height=8";
  GstBus *bus = harness_bus (hr);
  GstMessage *msg;
  GstStructure *stats;
  GstBuffer *out;
  GstFormat fmt;
  guint64 processed, dropped, frames, degraded;
  gboolean qos;

  g_object_get (hr->element, "qos", &qos, NULL);
  fail_unless (qos, "qos must be on by default");

  send_late_qos (hr);
  /* late: dropped, a QoS message says so; then one in time goes through */
  fail_unless_equals_int (gst_harness_push (hr, timed_frame (caps, 0x80,
              1 * GST_SECOND)), GST_FLOW_OK);
  fail_unless_equals_int (gst_harness_buffers_received (hr), 0);
  out = gst_harness_push_and_pull (hr, timed_frame (caps, 0x80,
          2 * GST_SECOND));
  fail_unless (out != NULL);
  fail_unless_equals_int (gst_harness_buffers_received (hr), 1);
  /* the frame after a gap is marked */
  fail_unless (GST_BUFFER_FLAG_IS_SET (out, GST_BUFFER_FLAG_DISCONT));
  gst_buffer_unref (out);

  msg = gst_bus_pop_filtered (bus, GST_MESSAGE_QOS);
  fail_unless (msg != NULL, "no QoS message for the dropped frame");
  gst_message_parse_qos_stats (msg, &fmt, &processed, &dropped);
  fail_unless_equals_int (fmt, GST_FORMAT_BUFFERS);
  fail_unless_equals_uint64 (dropped, 1);
  gst_message_unref (msg);

  g_object_get (hr->element, "stats", &stats, NULL);
  fail_unless (gst_structure_get_uint64 (stats, "frames", &frames));
  fail_unless (gst_structure_get_uint64 (stats, "dropped", &dropped));
  fail_unless (gst_structure_get_uint64 (stats, "degraded", &degraded));
  fail_unless_equals_uint64 (frames, 1);
  fail_unless_equals_uint64 (dropped, 1);
  fail_unless_equals_uint64 (degraded, 0);
  gst_structure_free (stats);

  /* a flush forgets the lateness */
  send_late_qos (hr);
  fail_unless (gst_harness_push_event (hr, gst_event_new_flush_start ()));
  fail_unless (gst_harness_push_event (hr, gst_event_new_flush_stop (TRUE)));
  gst_harness_set_src_caps_str (hr, "video/x-raw,format=RGB,width=12,"
      "height=8,framerate=25/1,pixel-aspect-ratio=1/1");
  fail_unless_equals_int (gst_harness_push (hr, timed_frame (caps, 0x80,
              1 * GST_SECOND)), GST_FLOW_OK);
  fail_unless_equals_int (gst_harness_buffers_received (hr), 2);

  /* qos=false: late frames are processed */
  g_object_set (hr->element, "qos", FALSE, NULL);
  send_late_qos (hr);
  fail_unless_equals_int (gst_harness_push (hr, timed_frame (caps, 0x80,
              1 * GST_SECOND)), GST_FLOW_OK);
  fail_unless_equals_int (gst_harness_buffers_received (hr), 3);

  gst_element_set_bus (hr->element, NULL);
  gst_object_unref (bus);
  gst_harness_teardown (hr);
}

GST_END_TEST;

GST_START_TEST (test_qos_bicubic)
{
  GstHarness *hr = harness_for (2, "RGB", 12, 8);
  const char *caps = "video/x-raw,format=RGB,width=12,height=8";
  GstBus *bus = harness_bus (hr);
  GstMessage *msg;
  GstStructure *stats;
  GstBuffer *out;
  GstFormat fmt;
  guint64 processed, dropped, frames, degraded;
  gint64 jitter;
  gdouble proportion;
  gint quality;

  g_object_set (hr->element, "qos-fallback", 1 /* bicubic */ , NULL);
  send_late_qos (hr);

  /* late: upscaled by bicubic — a flat frame stays exactly flat, which
   * the (random-weight) network would not do */
  out = gst_harness_push_and_pull (hr, timed_frame (caps, 0x80,
          1 * GST_SECOND));
  fail_unless (out != NULL, "late frame dropped in bicubic mode");
  fail_unless_equals_int (gst_buffer_get_size (out), 24 * 16 * 3);
  fail_unless (buffer_is_constant (out, 0x80));
  fail_unless_equals_uint64 (GST_BUFFER_PTS (out), 1 * GST_SECOND);
  gst_buffer_unref (out);

  /* in time: the network */
  out = gst_harness_push_and_pull (hr, timed_frame (caps, 0x80,
          2 * GST_SECOND));
  fail_unless (out != NULL);
  fail_if (buffer_is_constant (out, 0x80));
  gst_buffer_unref (out);

  msg = gst_bus_pop_filtered (bus, GST_MESSAGE_QOS);
  fail_unless (msg != NULL, "no QoS message for the degraded frame");
  gst_message_parse_qos_values (msg, &jitter, &proportion, &quality);
  fail_unless_equals_int (quality, 0);
  fail_unless_equals_int64 (jitter, 500 * GST_MSECOND);
  gst_message_parse_qos_stats (msg, &fmt, &processed, &dropped);
  fail_unless_equals_uint64 (dropped, 0);
  gst_message_unref (msg);
  fail_unless (gst_bus_pop_filtered (bus, GST_MESSAGE_QOS) == NULL);

  g_object_get (hr->element, "stats", &stats, NULL);
  fail_unless (gst_structure_get_uint64 (stats, "frames", &frames));
  fail_unless (gst_structure_get_uint64 (stats, "degraded", &degraded));
  fail_unless (gst_structure_get_uint64 (stats, "dropped", &dropped));
  fail_unless_equals_uint64 (frames, 1);
  fail_unless_equals_uint64 (degraded, 1);
  fail_unless_equals_uint64 (dropped, 0);
  gst_structure_free (stats);

  /* back to drop while late frames are announced: dropped again */
  g_object_set (hr->element, "qos-fallback", 0 /* drop */ , NULL);
  fail_unless_equals_int (gst_harness_push (hr, timed_frame (caps, 0x80,
              1200 * GST_MSECOND)), GST_FLOW_OK);
  fail_unless_equals_int (gst_harness_buffers_received (hr), 2);

  gst_element_set_bus (hr->element, NULL);
  gst_object_unref (bus);
  gst_harness_teardown (hr);
}

GST_END_TEST;

/* The bicubic fallback of a format with alpha: colour by bicubic, alpha by
 * bilinear, both kept apart — a frame of colour 0x80 and alpha 0x40 comes
 * out as exactly that (a lost alpha would come out opaque, 0xff). */
GST_START_TEST (test_qos_bicubic_alpha)
{
  GstHarness *hr = harness_for (2, "RGBA", 12, 8);
  GstBuffer *in = timed_frame ("video/x-raw,format=RGBA,width=12,height=8",
      0x80, 1 * GST_SECOND), *out;
  GstMapInfo map;

  g_object_set (hr->element, "qos-fallback", 1 /* bicubic */ , NULL);
  fail_unless (gst_buffer_map (in, &map, GST_MAP_WRITE));
  for (gsize i = 3; i < map.size; i += 4)
    map.data[i] = 0x40;
  gst_buffer_unmap (in, &map);
  send_late_qos (hr);
  out = gst_harness_push_and_pull (hr, in);
  fail_unless (out != NULL, "late frame dropped in bicubic mode");
  fail_unless (gst_buffer_map (out, &map, GST_MAP_READ));
  fail_unless_equals_int (map.size, 24 * 16 * 4);
  for (gsize i = 0; i < map.size; i++)
    fail_unless_equals_int (map.data[i], i % 4 == 3 ? 0x40 : 0x80);
  gst_buffer_unmap (out, &map);
  gst_buffer_unref (out);
  gst_harness_teardown (hr);
}

GST_END_TEST;

GST_START_TEST (test_latency_query)
{
  GstHarness *hr = harness_for (2, "I420", 16, 12);
  GstQuery *q = gst_query_new_latency ();
  GstClockTime min, max;
  gboolean live;

  /* synchronous: upstream's latency passes through unchanged */
  gst_harness_set_upstream_latency (hr, 40 * GST_MSECOND);
  fail_unless_equals_uint64 (gst_harness_query_latency (hr),
      40 * GST_MSECOND);
  fail_unless (gst_pad_peer_query (hr->sinkpad, q));
  gst_query_parse_latency (q, &live, &min, &max);
  fail_unless (live);
  fail_unless_equals_uint64 (min, 40 * GST_MSECOND);
  gst_query_unref (q);
  gst_harness_teardown (hr);
}

GST_END_TEST;

GST_START_TEST (test_post_messages)
{
  GstHarness *hr = harness_for (2, "NV12", 16, 12);
  const char *caps = "video/x-raw,format=NV12,width=16,height=12";
  GstBus *bus = harness_bus (hr);
  GstMessage *msg;
  gboolean post;
  guint64 v;
  int i;

  g_object_get (hr->element, "post-messages", &post, NULL);
  fail_if (post);
  gst_buffer_unref (gst_harness_push_and_pull (hr, timed_frame (caps, 0x30,
              0)));
  fail_unless (gst_bus_pop_filtered (bus, GST_MESSAGE_ELEMENT) == NULL);

  g_object_set (hr->element, "post-messages", TRUE, NULL);
  for (i = 0; i < 2; i++)
    gst_buffer_unref (gst_harness_push_and_pull (hr, timed_frame (caps, 0x30,
                (1 + i) * 40 * GST_MSECOND)));
  for (i = 0; i < 2; i++) {
    const GstStructure *s;
    gdouble ms;
    gint tiles;

    msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ELEMENT);
    fail_unless (msg != NULL, "no stats message %d", i);
    fail_unless (GST_MESSAGE_SRC (msg) == GST_OBJECT (hr->element));
    s = gst_message_get_structure (msg);
    fail_unless (gst_structure_has_name (s, "ehatsr-stats"));
    fail_unless (gst_structure_get_uint64 (s, "frame", &v));
    fail_unless_equals_uint64 (v, 1 + i);
    fail_unless (gst_structure_get_uint64 (s, "pts", &v));
    fail_unless_equals_uint64 (v, (1 + i) * 40 * GST_MSECOND);
    fail_unless (gst_structure_get_uint64 (s, "running-time", &v));
    fail_unless_equals_uint64 (v, (1 + i) * 40 * GST_MSECOND);
    fail_unless (gst_structure_get_double (s, "ms", &ms));
    fail_unless (ms > 0.0);
    fail_unless (gst_structure_get_int (s, "tiles", &tiles));
    fail_unless_equals_int (tiles, 1);
    fail_unless_equals_string (gst_structure_get_string (s, "backend"),
        "cpu");
    fail_unless_equals_string (gst_structure_get_string (s, "method"),
        "network");
    gst_message_unref (msg);
  }
  fail_unless (gst_bus_pop_filtered (bus, GST_MESSAGE_ELEMENT) == NULL);
  gst_element_set_bus (hr->element, NULL);
  gst_object_unref (bus);
  gst_harness_teardown (hr);
}

GST_END_TEST;

/* A model change that fails while playing keeps the running model and
 * warns; the stream goes on. */
static void
swap_to_bad_model (GstHarness * hr, GstBus * bus, const gchar * bad,
    const gchar * good)
{
  const char *caps = "video/x-raw,format=RGB,width=12,height=8";
  GstMessage *msg;
  GError *err = NULL;
  GstBuffer *out;
  gchar *model;
  gint scale;

  g_object_set (hr->element, "model", bad, NULL);
  msg = gst_bus_pop_filtered (bus, GST_MESSAGE_WARNING);
  fail_unless (msg != NULL, "no warning for %s", bad);
  gst_message_parse_warning (msg, &err, NULL);
  fail_unless (strstr (err->message, bad) != NULL, "%s", err->message);
  g_error_free (err);
  gst_message_unref (msg);
  fail_unless (gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR) == NULL);

  g_object_get (hr->element, "model", &model, "scale", &scale, NULL);
  fail_unless_equals_string (model, good);
  fail_unless_equals_int (scale, 2);
  g_free (model);

  out = gst_harness_push_and_pull (hr, make_frame (caps, 0x10));
  fail_unless (out != NULL);
  fail_unless_equals_int (gst_buffer_get_size (out), 24 * 16 * 3);
  gst_buffer_unref (out);
}

GST_START_TEST (test_model_swap_failure)
{
  GstHarness *hr = harness_for (2, "RGB", 12, 8);
  const char *caps = "video/x-raw,format=RGB,width=12,height=8";
  GstBus *bus = harness_bus (hr);
  gchar *good = golden_model (2), *tmp;
  int fd;

  gst_buffer_unref (gst_harness_push_and_pull (hr, make_frame (caps, 0x10)));

  swap_to_bad_model (hr, bus, "/nonexistent/model.safetensors", good);

  fd = g_file_open_tmp ("ehatsr-XXXXXX.safetensors", &tmp, NULL);
  fail_unless (fd >= 0);
  fail_unless (write (fd, "\x08\0\0\0\0\0\0\0{garbage", 17) == 17);
  close (fd);
  swap_to_bad_model (hr, bus, tmp, good);
  g_unlink (tmp);
  g_free (tmp);

  /* and the element still stops and starts cleanly */
  fail_unless_equals_int (gst_element_set_state (hr->element,
          GST_STATE_NULL), GST_STATE_CHANGE_SUCCESS);
  fail_unless_equals_int (gst_element_set_state (hr->element,
          GST_STATE_PLAYING), GST_STATE_CHANGE_SUCCESS);

  gst_element_set_bus (hr->element, NULL);
  gst_object_unref (bus);
  g_free (good);
  gst_harness_teardown (hr);
}

GST_END_TEST;

/* tile-size 0: the whole frame while it fits the memory budget, tiles
 * when it does not.  The budget is the engine's from its first frame on:
 * what the host has available moving later (here: the override) changes
 * no stream's geometry mid-way. */
GST_START_TEST (test_auto_tiles_from_memory)
{
  GstHarness *hr = harness_for (2, "RGBx", 64, 48), *small, *fixed;
  const char *caps = "video/x-raw,format=RGBx,width=64,height=48";
  GstBuffer *out, *again, *whole;
  GstMapInfo m;
  gint tw, th;

  gst_buffer_unref (gst_harness_push_and_pull (hr, make_frame (caps, 0x20)));
  fail_unless_equals_int (last_tiles (hr), 1);

  g_setenv ("EHAT_MEMORY_BUDGET_MB", "1", TRUE);
  gst_buffer_unref (gst_harness_push_and_pull (hr, make_frame (caps, 0x20)));
  fail_unless_equals_int (last_tiles (hr), 1);
  /* an element started under the 1 MiB budget tiles */
  small = harness_for (2, "RGBx", 64, 48);
  gst_buffer_unref (gst_harness_push_and_pull (small, make_frame (caps,
              0x20)));
  g_unsetenv ("EHAT_MEMORY_BUDGET_MB");
  fail_unless (last_tiles (small) > 1, "%d tiles", last_tiles (small));
  out = gst_harness_push_and_pull (small, make_frame (caps, 0x20));
  fail_unless (last_tiles (small) > 1, "%d tiles", last_tiles (small));

  /* its stats' tile-width × tile-height, given as tile-size and
   * tile-height to an element with all the memory it wants, repeat that
   * geometry: the same bytes (what ehat-remaster relies on) */
  last_geometry (small, &tw, &th);
  fixed = harness_for (2, "RGBx", 64, 48);
  g_object_set (fixed->element, "tile-size", tw, "tile-height", th, NULL);
  again = gst_harness_push_and_pull (fixed, make_frame (caps, 0x20));
  fail_unless_equals_int (last_tiles (fixed), last_tiles (small));
  /* and the whole frame gives other bytes: the geometry matters */
  whole = gst_harness_push_and_pull (hr, make_frame (caps, 0x20));
  fail_unless_equals_int (last_tiles (hr), 1);
  fail_unless (gst_buffer_map (out, &m, GST_MAP_READ));
  fail_unless (gst_buffer_memcmp (again, 0, m.data, m.size) == 0);
  fail_unless (gst_buffer_memcmp (whole, 0, m.data, m.size) != 0);
  gst_buffer_unmap (out, &m);
  gst_buffer_unref (whole);
  gst_buffer_unref (again);
  gst_buffer_unref (out);
  gst_harness_teardown (fixed);
  gst_harness_teardown (small);
  gst_harness_teardown (hr);
}

GST_END_TEST;

static Suite *
ehatsr_suite (void)
{
  Suite *s = suite_create ("ehatsr");
  TCase *tc = tcase_create ("general");

  tcase_set_timeout (tc, 300);
  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_properties);
  tcase_add_test (tc, test_missing_model);
  tcase_add_test (tc, test_caps_transform);
  tcase_add_test (tc, test_timestamps_and_stats);
  tcase_add_test (tc, test_roi_meta_scaled);
  tcase_add_test (tc, test_tiled_frame);
  tcase_add_test (tc, test_ape_model_tiles);
  tcase_add_test (tc, test_model_change_renegotiates);
  tcase_add_test (tc, test_qos_drop);
  tcase_add_test (tc, test_qos_bicubic);
  tcase_add_test (tc, test_qos_bicubic_alpha);
  tcase_add_test (tc, test_latency_query);
  tcase_add_test (tc, test_post_messages);
  tcase_add_test (tc, test_model_swap_failure);
  tcase_add_test (tc, test_auto_tiles_from_memory);
  tcase_add_test (tc, test_negotiation_all_formats);
  tcase_add_test (tc, test_odd_sizes);
  tcase_add_test (tc, test_interlaced);
  return s;
}

int
main (int argc, char **argv)
{
  /* the default model property must be the installed path */
  g_unsetenv ("EHATSR_MODEL");
  gst_check_init (&argc, &argv);
  return gst_check_run_suite (ehatsr_suite (), "ehatsr", __FILE__);
}
