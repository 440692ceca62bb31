/* A smooth colourful test image for the frame tests, planar float RGB in
 * [0.1, 0.9]: chroma subsampling of smooth content is nearly lossless (of
 * noise, lossy by nature), so what is left to measure is the conversion. */
#ifndef SMOOTH_IMAGE_H
#define SMOOTH_IMAGE_H

#include <glib.h>
#include <math.h>

static inline float *
smooth_image (int w, int h)
{
  float *img = g_new (float, (gsize) 3 * w * h);
  gsize n = (gsize) w * h;

  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      /* fixed spatial frequency, so that small frames are as smooth */
      double u = (x + 0.5) / 48.0, v = (y + 0.5) / 48.0;
      gsize o = (gsize) y * w + x;

      img[o] = (float) (0.5 + 0.4 * sin (2.0 * u + 1.0 * v));
      img[n + o] = (float) (0.5 + 0.4 * cos (1.5 * u - 2.0 * v));
      img[2 * n + o] = (float) (0.5 + 0.4 * sin (u * v + 0.5));
    }
  return img;
}

#endif /* SMOOTH_IMAGE_H */
