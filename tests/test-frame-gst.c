/* libehat's frame layouts against GStreamer's own converter
 * (GstVideoConverter, what videoconvert runs): for every pixel format
 * libehat has, named as GStreamer names it, in several matrices, ranges
 * and chroma sitings,
 *   - a frame GStreamer made from an RGB image reads back as that image,
 *   - a frame libehat wrote from an RGB image converts back to it in
 *     GStreamer,
 * both to within what chroma subsampling and the two chroma filters
 * (GStreamer's and libehat's) lose on smooth content.  A sample in the
 * wrong bits, plane, order or scale is off by far more.  So the element
 * (which maps each GstVideoFormat to the libehat format of that name)
 * reads and writes what the rest of a pipeline does. */
#include "ehat.h"
#include "ehat-frame.h"
#include "smooth-image.h"

#include <gst/video/video.h>
#include <math.h>
#include <string.h>

/* EhatFrame over a mapped GstVideoFrame (GStreamer's plane order). */
static void
wrap (GstVideoFrame *vf, EhatPixelFormat format, EhatFrame *f)
{
  memset (f, 0, sizeof (*f));
  f->format = format;
  f->width = GST_VIDEO_FRAME_WIDTH (vf);
  f->height = GST_VIDEO_FRAME_HEIGHT (vf);
  for (guint p = 0; p < GST_VIDEO_FRAME_N_PLANES (vf); p++) {
    f->data[p] = GST_VIDEO_FRAME_PLANE_DATA (vf, p);
    f->stride[p] = GST_VIDEO_FRAME_PLANE_STRIDE (vf, p);
  }
}

static void
set_color (GstVideoInfo *info, const EhatColorInfo *ci)
{
  static const GstVideoColorMatrix matrices[] = {
    [EHAT_MATRIX_BT601] = GST_VIDEO_COLOR_MATRIX_BT601,
    [EHAT_MATRIX_BT709] = GST_VIDEO_COLOR_MATRIX_BT709,
    [EHAT_MATRIX_BT2020] = GST_VIDEO_COLOR_MATRIX_BT2020,
  };

  info->colorimetry.matrix = matrices[ci->matrix];
  info->colorimetry.range = ci->range == EHAT_RANGE_FULL ?
      GST_VIDEO_COLOR_RANGE_0_255 : GST_VIDEO_COLOR_RANGE_16_235;
  info->chroma_site = ci->siting == EHAT_CHROMA_LEFT ?
      GST_VIDEO_CHROMA_SITE_MPEG2 : GST_VIDEO_CHROMA_SITE_JPEG;
}

/* GStreamer's conversion of src into dst (no dithering: exact codes). */
static void
gst_convert (GstVideoFrame *src, GstVideoFrame *dst)
{
  GstVideoConverter *c = gst_video_converter_new (&src->info, &dst->info,
      gst_structure_new ("options",
          GST_VIDEO_CONVERTER_OPT_DITHER_METHOD,
          GST_TYPE_VIDEO_DITHER_METHOD, GST_VIDEO_DITHER_NONE,
          GST_VIDEO_CONVERTER_OPT_THREADS, G_TYPE_UINT, 1, NULL));

  g_assert_nonnull (c);
  gst_video_converter_frame (c, src, dst);
  gst_video_converter_free (c);
}

/* Max and mean |got − want| over n floats within the tolerances. */
static void
check (const char *what, const float *got, const float *want, gsize n,
    double tol_max, double tol_mean)
{
  double sum = 0.0, max = 0.0;

  for (gsize k = 0; k < n; k++) {
    double d = fabs ((double) got[k] - want[k]);
    max = MAX (max, d);
    sum += d;
  }
  g_test_message ("%s: max %.4f mean %.5f", what, max, sum / n);
  g_assert_cmpfloat (max, <=, tol_max);
  g_assert_cmpfloat (sum / n, <=, tol_mean);
}

static void
test_format (gconstpointer data)
{
  EhatPixelFormat format = GPOINTER_TO_INT (data);
  const char *name = ehat_pixel_format_to_string (format);
  GstVideoFormat gf = gst_video_format_from_string (name);
  gboolean gray = format == EHAT_PIXEL_GRAY8
      || format == EHAT_PIXEL_GRAY16_LE;
  /* an odd width, but for NV61 and VYUY, whose last (half) macropixel
   * GStreamer 1.22 packs and unpacks with U and V swapped (its odd-width
   * tails read V where U is); /frame/swapped-chroma checks them at odd
   * widths against NV16 and UYVY */
  const int w = format == EHAT_PIXEL_NV61 || format == EHAT_PIXEL_VYUY ?
      36 : 37, h = 22;
  static const EhatColorInfo colors[] = {
    {EHAT_MATRIX_BT709, EHAT_RANGE_LIMITED, EHAT_CHROMA_LEFT},
    {EHAT_MATRIX_BT601, EHAT_RANGE_FULL, EHAT_CHROMA_CENTER},
    {EHAT_MATRIX_BT2020, EHAT_RANGE_LIMITED, EHAT_CHROMA_CENTER},
  };

  g_assert_cmpint (gf, !=, GST_VIDEO_FORMAT_UNKNOWN);
  for (guint c = 0; c < G_N_ELEMENTS (colors); c++) {
    g_autofree float *src = smooth_image (w, h);
    g_autofree float *back = g_new (float, (gsize) 3 * w * h);
    g_autofree float *want = NULL;
    GstVideoInfo rgb_info, info;
    GstBuffer *rgb_buf, *buf;
    GstVideoFrame rgb, vf;
    EhatFrame ef, rf;
    GError *err = NULL;
    g_autofree char *what = NULL;
    /* Packed RGB must match exactly.  Y'CbCr: GStreamer's 8-bit paths
     * compute in 8-bit fixed point (measured: up to 0.035, 2.9 codes on
     * average, where its 10-bit and deeper paths differ from libehat's by
     * under half a code on average); the chroma filters differ too.  A
     * sample in the wrong bits, plane or order is off by 0.1 to 1. */
    gboolean rgb8 = !ehat_pixel_format_is_yuv (format) && !gray
        && ehat_pixel_format_depth (format) == 8;
    gboolean rgb_deep = !ehat_pixel_format_is_yuv (format) && !gray
        && ehat_pixel_format_depth (format) > 8;
    gboolean deep = ehat_pixel_format_depth (format) > 8;
    /* deeper RGB: GStreamer widens 8-bit codes by bit replication (0.7
     * of a 10-bit code from the exact value) and narrows them by
     * truncation (up to one 8-bit code) */
    double tol_max = rgb8 ? 1e-6 : rgb_deep ? 1.0 / 255 + 1e-6
        : deep ? 0.016 : 0.04;
    double tol_mean = rgb8 ? 1e-6 : rgb_deep ? 0.0015 : deep ? 0.005
        : 0.0125;

    gst_video_info_set_format (&rgb_info, GST_VIDEO_FORMAT_RGB, w, h);
    gst_video_info_set_format (&info, gf, w, h);
    set_color (&info, &colors[c]);
    rgb_buf = gst_buffer_new_allocate (NULL, rgb_info.size, NULL);
    buf = gst_buffer_new_allocate (NULL, info.size, NULL);

    /* the image as 8-bit RGB, the reference both ways (what libehat
     * reads of it is the image within half a code) */
    g_assert_true (gst_video_frame_map (&rgb, &rgb_info, rgb_buf,
            GST_MAP_READWRITE));
    wrap (&rgb, EHAT_PIXEL_RGB, &rf);
    g_assert_true (ehat_frame_write (src, NULL, NULL, &rf, &err));
    g_assert_no_error (err);
    want = g_new (float, (gsize) 3 * w * h);
    g_assert_true (ehat_frame_read (&rf, NULL, want, &err));
    g_assert_no_error (err);
    if (gray)
      /* grey keeps luma only: compare with the image's luma as grey */
      for (gsize k = 0; k < (gsize) w * h; k++) {
        double l = colors[c].matrix == EHAT_MATRIX_BT601 ?
            0.299 * want[k] + 0.587 * want[w * h + k]
            + 0.114 * want[2 * w * h + k] :
            colors[c].matrix == EHAT_MATRIX_BT709 ?
            0.2126 * want[k] + 0.7152 * want[w * h + k]
            + 0.0722 * want[2 * w * h + k] :
            0.2627 * want[k] + 0.6780 * want[w * h + k]
            + 0.0593 * want[2 * w * h + k];
        want[k] = want[w * h + k] = want[2 * w * h + k] = (float) l;
      }

    /* GStreamer writes, libehat reads */
    g_assert_true (gst_video_frame_map (&vf, &info, buf, GST_MAP_READWRITE));
    gst_convert (&rgb, &vf);
    wrap (&vf, format, &ef);
    g_assert_true (ehat_frame_read (&ef, &colors[c], back, &err));
    g_assert_no_error (err);
    what = g_strdup_printf ("%s colour %u, GStreamer -> libehat", name, c);
    check (what, back, want, (gsize) 3 * w * h, tol_max, tol_mean);

    /* libehat writes, GStreamer reads */
    g_assert_true (ehat_frame_write (src, NULL, &colors[c], &ef, &err));
    g_assert_no_error (err);
    gst_convert (&vf, &rgb);
    g_assert_true (ehat_frame_read (&rf, NULL, back, &err));
    g_assert_no_error (err);
    g_free (what);
    what = g_strdup_printf ("%s colour %u, libehat -> GStreamer", name, c);
    check (what, back, want, (gsize) 3 * w * h, tol_max, tol_mean);

    gst_video_frame_unmap (&vf);
    gst_video_frame_unmap (&rgb);
    gst_buffer_unref (buf);
    gst_buffer_unref (rgb_buf);
  }
}

/* Alpha, in the formats that have it: an alpha ramp GStreamer carried
 * from RGBA into the format reads back as it was, and the format libehat
 * wrote with it carries it back to RGBA: exactly at 8 and 16 bits
 * (GStreamer widens 8 bits to 16 by replication, v·257, which is v/255 of
 * 65535, and narrows by truncation); at 10 and 12 bits within one 8-bit
 * code (replication is not exact there). */
static void
test_alpha (gconstpointer data)
{
  EhatPixelFormat format = GPOINTER_TO_INT (data);
  const char *name = ehat_pixel_format_to_string (format);
  const int w = 37, h = 22;
  const gsize n = (gsize) w * h;
  g_autofree float *rgb = smooth_image (w, h);
  g_autofree float *alpha = g_new (float, n);
  g_autofree float *back = g_new (float, n);
  GstVideoInfo rgba_info, info;
  GstBuffer *rgba_buf, *buf;
  GstVideoFrame rgba, vf;
  EhatFrame rf, ef;
  GError *err = NULL;
  int depth = ehat_pixel_format_depth (format);
  gboolean exact = depth == 8 || depth == 16;
  double tol_max = exact ? 1e-6 : 1.0 / 255 + 1e-6;
  double tol_mean = exact ? 1e-6 : 0.003;

  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      alpha[(gsize) y * w + x] = (float) ((x * 7 + y * 13) % 256) / 255.0f;
  gst_video_info_set_format (&rgba_info, GST_VIDEO_FORMAT_RGBA, w, h);
  gst_video_info_set_format (&info, gst_video_format_from_string (name), w,
      h);
  rgba_buf = gst_buffer_new_allocate (NULL, rgba_info.size, NULL);
  buf = gst_buffer_new_allocate (NULL, info.size, NULL);
  g_assert_true (gst_video_frame_map (&rgba, &rgba_info, rgba_buf,
          GST_MAP_READWRITE));
  g_assert_true (gst_video_frame_map (&vf, &info, buf, GST_MAP_READWRITE));
  wrap (&rgba, EHAT_PIXEL_RGBA, &rf);
  wrap (&vf, format, &ef);

  g_assert_true (ehat_frame_write (rgb, alpha, NULL, &rf, &err));
  g_assert_no_error (err);
  gst_convert (&rgba, &vf);
  g_assert_true (ehat_frame_read_alpha (&ef, back, &err));
  g_assert_no_error (err);
  check ("alpha, GStreamer -> libehat", back, alpha, n, tol_max, tol_mean);

  g_assert_true (ehat_frame_write (rgb, alpha, NULL, &ef, &err));
  g_assert_no_error (err);
  memset (GST_VIDEO_FRAME_PLANE_DATA (&rgba, 0), 0, rgba_info.size);
  gst_convert (&vf, &rgba);
  g_assert_true (ehat_frame_read_alpha (&rf, back, &err));
  g_assert_no_error (err);
  check ("alpha, libehat -> GStreamer", back, alpha, n, tol_max, tol_mean);

  gst_video_frame_unmap (&vf);
  gst_video_frame_unmap (&rgba);
  gst_buffer_unref (buf);
  gst_buffer_unref (rgba_buf);
}

int
main (int argc, char **argv)
{
  gst_init (NULL, NULL);
  g_test_init (&argc, &argv, NULL);
  for (int f = 0; f < EHAT_PIXEL_N_FORMATS; f++) {
    g_autofree char *path = g_strdup_printf ("/frame-gst/%s",
        ehat_pixel_format_to_string (f));

    g_test_add_data_func (path, GINT_TO_POINTER (f), test_format);
    if (ehat_pixel_format_has_alpha (f)) {
      g_autofree char *apath = g_strdup_printf ("/frame-gst/alpha/%s",
          ehat_pixel_format_to_string (f));

      g_test_add_data_func (apath, GINT_TO_POINTER (f), test_alpha);
    }
  }
  return g_test_run ();
}
