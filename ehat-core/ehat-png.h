/* 8-bit RGB PNG files for the command-line tool (libpng's simplified API). */
#ifndef EHAT_PNG_H
#define EHAT_PNG_H

#include <glib.h>

G_BEGIN_DECLS

/* Any PNG (grey, palette, 16-bit, alpha) is converted to 8-bit RGB. */
gboolean ehat_png_read (const char *path, guint8 **rgb, int *width,
    int *height, GError **error);
gboolean ehat_png_write (const char *path, const guint8 *rgb, int width,
    int height, GError **error);

/* 8-bit interleaved RGB ↔ planar float in [0, 1] (rounded, clamped). */
float *ehat_rgb8_to_planar (const guint8 *rgb, int width, int height);
guint8 *ehat_planar_to_rgb8 (const float *planar, int width, int height);

G_END_DECLS

#endif /* EHAT_PNG_H */
