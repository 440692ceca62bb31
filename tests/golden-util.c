#include "golden-util.h"

#include "ehat-safetensors.h"

#include <math.h>

Image
read_image (const char *path)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (EhatSafetensors) st = ehat_safetensors_open (path, &error);
  const EhatStTensor *t;
  Image img = { 0 };

  g_assert_no_error (error);
  t = ehat_safetensors_find (st, "image");
  g_assert_nonnull (t);
  g_assert_cmpint (t->ndim, ==, 4);
  g_assert_cmpint (t->shape[1], ==, 3);
  img.n = (int) t->shape[0];
  img.h = (int) t->shape[2];
  img.w = (int) t->shape[3];
  img.data = g_new (float, t->numel);
  ehat_st_tensor_to_f32 (t, img.data);
  return img;
}

double
max_abs_diff (const float *a, const float *b, gsize n)
{
  double m = 0.0;
  for (gsize i = 0; i < n; i++) {
    double d = fabs ((double) a[i] - b[i]);
    if (!(d <= m))
      m = isnan (d) ? INFINITY : d;
  }
  return m;
}
