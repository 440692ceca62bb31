/* libehat — self-ensemble of a tile-processing function: see
 * ehat-ensemble.h. */
#include "ehat-ensemble.h"

#include <string.h>

void
ehat_dihedral (const float *src, int planes, int width, int height, int t,
    float *dst, gboolean accumulate)
{
  gboolean hflip = t & 1, vflip = t & 2, transpose = t & 4;
  /* (tw, th): the transformed size; pixel (y, x) of it is pixel (r, c) of
   * the image, (a, b) = transposed ? (x, y) : (y, x), r and c mirrored as
   * the flips say.  One walk over the transformed pixels serves both
   * directions: a gather (forward) or a scatter-add (inverse). */
  int tw = transpose ? height : width, th = transpose ? width : height;
  gsize plane = (gsize) width * height;

  for (int p = 0; p < planes; p++) {
    const float *s = src + p * plane;
    float *d = dst + p * plane;

    for (int y = 0; y < th; y++) {
      for (int x = 0; x < tw; x++) {
        int a = transpose ? x : y, b = transpose ? y : x;
        int r = vflip ? height - 1 - a : a, c = hflip ? width - 1 - b : b;
        gsize img = (gsize) r * width + c, tr = (gsize) y * tw + x;

        if (accumulate)
          d[img] += s[tr];
        else
          d[tr] = s[img];
      }
    }
  }
}

gboolean
ehat_ensemble_process (gpointer ensemble, const float *in, int n, int width,
    int height, float *out, GError **error)
{
  const EhatEnsemble *e = ensemble;
  gsize in_elems, out_elems;
  float *tin, *tout;
  gboolean ok = TRUE;

  if (e->n_transforms <= 1)
    return e->func (e->user_data, in, n, width, height, out, error);
  if (n < 1 || width < 1 || height < 1 || e->scale < 1
      || width > G_MAXINT / e->scale || height > G_MAXINT / e->scale
      || !g_size_checked_mul (&in_elems, (gsize) n * 3, width)
      || !g_size_checked_mul (&in_elems, in_elems, height)
      || !g_size_checked_mul (&out_elems, in_elems,
          (gsize) e->scale * e->scale)) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "self-ensemble: invalid batch of %d images of %d×%d", n, width,
        height);
    return FALSE;
  }
  tin = g_try_new (float, in_elems);
  tout = g_try_new (float, out_elems);
  if (!tin || !tout) {
    g_free (tin);
    g_free (tout);
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY,
        "self-ensemble: out of host memory for a %d×%d batch of %d", width,
        height, n);
    return FALSE;
  }
  memset (out, 0, out_elems * sizeof (float));
  for (int t = 0; t < e->n_transforms && ok; t++) {
    gboolean tr = t & 4;
    int tw = tr ? height : width, th = tr ? width : height;

    ehat_dihedral (in, 3 * n, width, height, t, tin, FALSE);
    ok = e->func (e->user_data, tin, n, tw, th, tout, error);
    if (ok)
      ehat_dihedral (tout, 3 * n, width * e->scale, height * e->scale, t,
          out, TRUE);
  }
  if (ok) {
    float inv = 1.0f / e->n_transforms;

    for (gsize i = 0; i < out_elems; i++)
      out[i] *= inv;
  }
  g_free (tin);
  g_free (tout);
  return ok;
}

gboolean
ehat_engine_tile_func (gpointer engine, const float *in, int n, int width,
    int height, float *out, GError **error)
{
  return ehat_engine_process (engine, in, n, width, height, out, error);
}

gboolean
ehat_engine_process_ensemble (EhatEngine *engine, const float *in, int n,
    int width, int height, int n_transforms, float *out, GError **error)
{
  EhatEnsemble e = { ehat_engine_tile_func, engine, n_transforms, 0 };

  if (!engine) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "self-ensemble: NULL engine");
    return FALSE;
  }
  if (!ehat_ensemble_check (n_transforms, error))
    return FALSE;
  e.scale = ehat_model_get_config (ehat_engine_get_model (engine))->upscale;
  return ehat_ensemble_process (&e, in, n, width, height, out, error);
}

gboolean
ehat_ensemble_check (int n_transforms, GError **error)
{
  if (n_transforms < 0 || n_transforms > 8
      || (n_transforms & (n_transforms - 1))) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "self-ensemble of %d transforms: 1, 2, 4 or 8 (0 = 1, off)",
        n_transforms);
    return FALSE;
  }
  return TRUE;
}
