#include "golden-util.h"

#include "ehat-png.h"
#include "ehat-safetensors.h"

#include <math.h>
#include <string.h>

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

double
psnr (const float *a, const float *b, gsize n)
{
  double se = 0.0;
  for (gsize i = 0; i < n; i++) {
    double d = (double) a[i] - b[i];
    se += d * d;
  }
  if (isnan (se))
    return -INFINITY;
  return se == 0.0 ? 200.0 : 10.0 * log10 ((double) n / se);
}

float *
load_png (const char *rel, int *w, int *h)
{
  const char *dir = g_getenv ("EHAT_SHARED_DATA");
  g_autofree char *path = dir ? g_build_filename (dir, rel, NULL) : NULL;
  g_autofree guint8 *rgb = NULL;
  g_autoptr (GError) error = NULL;

  if (!path || !ehat_png_read (path, &rgb, w, h, &error)) {
    g_test_fail_printf ("test image %s missing (EHAT_SHARED_DATA=%s)", rel,
        dir);
    return NULL;
  }
  return ehat_rgb8_to_planar (rgb, *w, *h);
}

gboolean
load_shipped (const char *name, EhatModel **model, float **in, int *w,
    int *h)
{
  const char *dir = g_getenv ("EHAT_MODELS_DIR");
  g_autofree char *file = g_strconcat (name, ".safetensors", NULL);
  g_autofree char *path = dir ? g_build_filename (dir, file, NULL) : NULL;
  g_autoptr (GError) error = NULL;

  if (!path || !g_file_test (path, G_FILE_TEST_EXISTS)) {
    g_test_fail_printf ("shipped model missing (EHAT_MODELS_DIR=%s)", dir);
    return FALSE;
  }
  *in = load_png ("eval/Set5/LR_bicubic/X2/butterflyx2.png", w, h);
  if (!*in)
    return FALSE;
  *model = ehat_model_load (path, &error);
  g_assert_no_error (error);
  return TRUE;
}

static int
cmp_names (gconstpointer a, gconstpointer b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

guint
golden_add_cases (const char *dir_path, const char *prefix,
    GTestDataFunc func, GPtrArray *keep)
{
  g_autoptr (GDir) dir = NULL;
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  const char *name;

  if (!dir_path || !(dir = g_dir_open (dir_path, 0, NULL)))
    return 0;
  while ((name = g_dir_read_name (dir)))
    g_ptr_array_add (names, g_strdup (name));
  g_ptr_array_sort (names, cmp_names);
  for (guint i = 0; i < names->len; i++) {
    const char *n = g_ptr_array_index (names, i);
    char *path = g_build_filename (dir_path, n, NULL);
    g_autofree char *tp = g_strdup_printf ("%s/%s", prefix, n);

    g_ptr_array_add (keep, path);
    g_test_add_data_func (tp, path, func);
  }
  return names->len;
}
