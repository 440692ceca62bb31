#include "ehat-png.h"
#include "ehat-frame.h"

#include "ehat.h"

#include <math.h>
#include <png.h>
#include <string.h>

gboolean
ehat_png_read (const char *path, guint8 **rgb, int *width, int *height,
    GError **error)
{
  png_image img;
  guint8 *buf;

  memset (&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file (&img, path)) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_IO, "%s: %s", path,
        img.message);
    return FALSE;
  }
  if (img.width == 0 || img.height == 0 || img.width > 65536
      || img.height > 65536) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "%s: unsupported image size %u×%u", path, img.width, img.height);
    png_image_free (&img);
    return FALSE;
  }
  img.format = PNG_FORMAT_RGB;
  buf = g_try_malloc (PNG_IMAGE_SIZE (img));
  if (!buf) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY,
        "%s: out of memory", path);
    png_image_free (&img);
    return FALSE;
  }
  if (!png_image_finish_read (&img, NULL, buf, 0, NULL)) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_IO, "%s: %s", path,
        img.message);
    g_free (buf);
    return FALSE;
  }
  *rgb = buf;
  *width = (int) img.width;
  *height = (int) img.height;
  return TRUE;
}

gboolean
ehat_png_write (const char *path, const guint8 *rgb, int width, int height,
    GError **error)
{
  png_image img;

  memset (&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = width;
  img.height = height;
  img.format = PNG_FORMAT_RGB;
  if (!png_image_write_to_file (&img, path, 0, rgb, 0, NULL)) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_IO, "%s: %s", path,
        img.message);
    return FALSE;
  }
  return TRUE;
}

/* Through ehat-frame's RGB path, so that the CLI and the element convert
 * (and round) 8-bit codes identically: `ehat upscale` output equals the
 * element's byte for byte. */
static EhatFrame
rgb_frame (const guint8 *rgb, int width, int height)
{
  EhatFrame f = { EHAT_PIXEL_RGB, width, height, {(guint8 *) rgb},
    {width * 3}
  };
  return f;
}

float *
ehat_rgb8_to_planar (const guint8 *rgb, int width, int height)
{
  EhatColorInfo color = EHAT_COLOR_INFO_INIT;
  EhatFrame f = rgb_frame (rgb, width, height);
  float *p = g_new (float, 3 * (gsize) width * height);

  /* cannot fail: the frame is well-formed RGB */
  ehat_frame_read (&f, &color, p, NULL);
  return p;
}

guint8 *
ehat_planar_to_rgb8 (const float *planar, int width, int height)
{
  EhatColorInfo color = EHAT_COLOR_INFO_INIT;
  guint8 *rgb = g_new (guint8, 3 * (gsize) width * height);
  EhatFrame f = rgb_frame (rgb, width, height);

  ehat_frame_write (planar, NULL, &color, &f, NULL);
  return rgb;
}
