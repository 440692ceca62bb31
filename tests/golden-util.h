/* Helpers shared by the golden-data tests (CPU and CUDA). */
#ifndef EHAT_GOLDEN_UTIL_H
#define EHAT_GOLDEN_UTIL_H

#include "ehat.h"

#include <glib.h>

typedef struct
{
  int n, h, w;
  float *data;
} Image;

/* Tensor `image` [N,3,H,W] of a safetensors file, as float32 (asserts). */
Image read_image (const char *path);
/* Max |a − b|; a NaN anywhere gives +inf, so it always fails a bound. */
double max_abs_diff (const float *a, const float *b, gsize n);
/* PSNR with peak 1 on raw outputs (200 when equal, −∞ with a NaN). */
double psnr (const float *a, const float *b, gsize n);
/* A PNG of $EHAT_SHARED_DATA/@rel as planar RGB floats in [0, 1]; NULL
 * and a failed test when it cannot be read. */
float *load_png (const char *rel, int *w, int *h);
/* A shipped model, @name.safetensors of $EHAT_MODELS_DIR, and the real
 * image its tests run on (Set5's butterfly, the ×2 LR) as planar RGB;
 * FALSE and a failed test when either is missing. */
gboolean load_shipped (const char *name, EhatModel **model, float **in,
    int *w, int *h);
/* Registers "@prefix/<case>" → @func (case folder path) for every case
 * folder of @dir_path, in name order; @keep owns the paths.  Returns the
 * number of cases (0 when @dir_path is NULL or cannot be read: callers
 * that need the data assert on the count). */
guint golden_add_cases (const char *dir_path, const char *prefix,
    GTestDataFunc func, GPtrArray *keep);

#endif /* EHAT_GOLDEN_UTIL_H */
