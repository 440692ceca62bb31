/* libehat — bicubic resampling.  See ehat-resample.h.
 *
 * Separable: each output row is first interpolated vertically from four
 * input rows into a row of input width, then horizontally.  The per-column
 * taps and weights are computed once per call, so the cost is
 * 4·(out_h·w + out_h·out_w) multiply-adds per plane and the only buffer is
 * one input row (no full-size intermediate, whatever the frame size).
 */
#include "ehat-resample.h"

#include <math.h>

#define A (-0.5)

double
ehat_cubic_kernel (double x)
{
  x = fabs (x);
  if (x <= 1.0)
    return ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
  if (x < 2.0)
    return ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
  return 0.0;
}

/* Four taps (clamped indices) and weights (normalised to sum to one) of
 * output position i along an axis of n → out_n samples. */
static void
taps (int i, int n, int out_n, int *idx, float *w)
{
  double src = (i + 0.5) * n / (double) out_n - 0.5;
  double fl = floor (src), sum = 0.0, ww[4];
  int k;

  for (k = 0; k < 4; k++) {
    int j = (int) fl - 1 + k;

    ww[k] = ehat_cubic_kernel (src - j);
    sum += ww[k];
    idx[k] = CLAMP (j, 0, n - 1);
  }
  for (k = 0; k < 4; k++)
    w[k] = (float) (ww[k] / sum);
}

gboolean
ehat_resize_bicubic (const float *in, int n_planes, int width, int height,
    float *out, int out_width, int out_height)
{
  int *xi, *yi;
  float *xw, *yw, *row;
  gsize in_plane, out_plane;
  int p, x, y;

  if (!in || !out || n_planes < 1 || width < 1 || height < 1
      || out_width < 1 || out_height < 1)
    return FALSE;

  xi = g_try_new (int, (gsize) 4 * out_width);
  xw = g_try_new (float, (gsize) 4 * out_width);
  yi = g_try_new (int, (gsize) 4 * out_height);
  yw = g_try_new (float, (gsize) 4 * out_height);
  row = g_try_new (float, width);
  if (!xi || !xw || !yi || !yw || !row) {
    g_free (xi);
    g_free (xw);
    g_free (yi);
    g_free (yw);
    g_free (row);
    return FALSE;
  }
  for (x = 0; x < out_width; x++)
    taps (x, width, out_width, xi + 4 * x, xw + 4 * x);
  for (y = 0; y < out_height; y++)
    taps (y, height, out_height, yi + 4 * y, yw + 4 * y);

  in_plane = (gsize) width * height;
  out_plane = (gsize) out_width * out_height;
  for (p = 0; p < n_planes; p++) {
    const float *src = in + p * in_plane;
    float *dst = out + p * out_plane;

    for (y = 0; y < out_height; y++) {
      const float *r0 = src + (gsize) yi[4 * y] * width;
      const float *r1 = src + (gsize) yi[4 * y + 1] * width;
      const float *r2 = src + (gsize) yi[4 * y + 2] * width;
      const float *r3 = src + (gsize) yi[4 * y + 3] * width;
      float w0 = yw[4 * y], w1 = yw[4 * y + 1], w2 = yw[4 * y + 2];
      float w3 = yw[4 * y + 3];
      float *d = dst + (gsize) y * out_width;

      for (x = 0; x < width; x++)
        row[x] = w0 * r0[x] + w1 * r1[x] + w2 * r2[x] + w3 * r3[x];
      for (x = 0; x < out_width; x++) {
        const int *i = xi + 4 * x;
        const float *w = xw + 4 * x;

        d[x] = w[0] * row[i[0]] + w[1] * row[i[1]] + w[2] * row[i[2]]
            + w[3] * row[i[3]];
      }
    }
  }
  g_free (xi);
  g_free (xw);
  g_free (yi);
  g_free (yw);
  g_free (row);
  return TRUE;
}
