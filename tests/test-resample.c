/* Bicubic resampling (ehat-resample) against a naive reference. */
#include "ehat-resample.h"

#include <math.h>

/* Textbook 2-D cubic convolution in double precision: 16 taps per output
 * pixel, Keys a = −0.5 written out independently of the library. */
static double
keys (double x)
{
  x = fabs (x);
  if (x < 1.0)
    return 1.5 * x * x * x - 2.5 * x * x + 1.0;
  if (x < 2.0)
    return -0.5 * x * x * x + 2.5 * x * x - 4.0 * x + 2.0;
  return 0.0;
}

static void
naive (const float *in, int w, int h, float *out, int ow, int oh)
{
  for (int y = 0; y < oh; y++)
    for (int x = 0; x < ow; x++) {
      double sy = (y + 0.5) * h / oh - 0.5, sx = (x + 0.5) * w / ow - 0.5;
      double acc = 0.0;

      for (int j = (int) floor (sy) - 1; j <= (int) floor (sy) + 2; j++)
        for (int i = (int) floor (sx) - 1; i <= (int) floor (sx) + 2; i++)
          acc += keys (sy - j) * keys (sx - i)
              * in[CLAMP (j, 0, h - 1) * w + CLAMP (i, 0, w - 1)];
      out[y * ow + x] = (float) acc;
    }
}

static void
check_against_naive (int w, int h, int ow, int oh, guint32 seed)
{
  GRand *r = g_rand_new_with_seed (seed);
  float *in = g_new (float, 2 * w * h), *out = g_new (float, 2 * ow * oh);
  float *ref = g_new (float, ow * oh);

  for (int i = 0; i < 2 * w * h; i++)
    in[i] = (float) g_rand_double (r);
  g_assert_true (ehat_resize_bicubic (in, 2, w, h, out, ow, oh));
  for (int p = 0; p < 2; p++) {
    naive (in + p * w * h, w, h, ref, ow, oh);
    for (int i = 0; i < ow * oh; i++)
      g_assert_cmpfloat_with_epsilon (out[p * ow * oh + i], ref[i], 2e-6);
  }
  g_free (in);
  g_free (out);
  g_free (ref);
  g_rand_free (r);
}

static void
test_naive (void)
{
  check_against_naive (13, 7, 26, 14, 1);       /* ×2 */
  check_against_naive (5, 9, 15, 27, 2);        /* ×3 */
  check_against_naive (8, 8, 32, 32, 3);        /* ×4 */
  check_against_naive (1, 1, 4, 4, 4);          /* a single pixel */
  check_against_naive (3, 5, 7, 11, 5);         /* non-integer factors */
  check_against_naive (20, 10, 9, 4, 6);        /* downscale */
}

static void
test_properties (void)
{
  int w = 16, h = 12, s = 3;
  float *in = g_new (float, w * h), *out = g_new (float, w * h * s * s);

  /* identity at scale 1 */
  for (int i = 0; i < w * h; i++)
    in[i] = (float) ((i * 37) % 101) / 100.0f;
  g_assert_true (ehat_resize_bicubic (in, 1, w, h, out, w, h));
  for (int i = 0; i < w * h; i++)
    g_assert_cmpfloat_with_epsilon (out[i], in[i], 1e-6);

  /* constants stay constant (the weights sum to one) */
  for (int i = 0; i < w * h; i++)
    in[i] = 0.25f;
  g_assert_true (ehat_resize_bicubic (in, 1, w, h, out, w * s, h * s));
  for (int i = 0; i < w * h * s * s; i++)
    g_assert_cmpfloat_with_epsilon (out[i], 0.25f, 1e-6);

  /* a linear ramp is reproduced away from the (replicated) edges */
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      in[y * w + x] = 0.01f * x + 0.02f * y;
  g_assert_true (ehat_resize_bicubic (in, 1, w, h, out, w * s, h * s));
  for (int y = 2 * s; y < (h - 2) * s; y++)
    for (int x = 2 * s; x < (w - 2) * s; x++) {
      double sx = (x + 0.5) / s - 0.5, sy = (y + 0.5) / s - 0.5;
      g_assert_cmpfloat_with_epsilon (out[y * w * s + x],
          0.01 * sx + 0.02 * sy, 1e-5);
    }

  /* invalid arguments */
  g_assert_false (ehat_resize_bicubic (in, 1, 0, h, out, w, h));
  g_assert_false (ehat_resize_bicubic (in, 0, w, h, out, w, h));
  g_assert_false (ehat_resize_bicubic (NULL, 1, w, h, out, w, h));
  g_free (in);
  g_free (out);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/resample/naive", test_naive);
  g_test_add_func ("/resample/properties", test_properties);
  return g_test_run ();
}
