/* A random transformer MLP (LayerNorm → fc1 → GELU → fc2 with a residual)
 * for the tests of the fused backend operations `mlp` and `norm_linear`
 * (test-ops.c in fp32, test-bf16.c in bf16): the case, the double
 * reference, and the same computed by the unfused operations. */
#ifndef MLP_CASE_H
#define MLP_CASE_H

#include "ehat-backend.h"

#include <math.h>
#include <string.h>

typedef struct
{
  int rows, in, hid;
  float *x;                     /* rows × in, values around `mean` */
  EhatLinearW fc1, fc2;
  EhatNormW nw;
} MlpCase;

static inline float *
mlp_case_rnd (GRand *rng, gsize n, double scale, double mean)
{
  float *p = g_new (float, n);
  for (gsize i = 0; i < n; i++)
    p[i] = (float) (mean + g_rand_double_range (rng, -scale, scale));
  return p;
}

static inline MlpCase *
mlp_case_new (GRand *rng, int rows, int in, int hid, double mean)
{
  MlpCase *mc = g_new0 (MlpCase, 1);

  mc->rows = rows;
  mc->in = in;
  mc->hid = hid;
  mc->x = mlp_case_rnd (rng, (gsize) rows * in, 1.0, mean);
  mc->fc1 = (EhatLinearW) { mlp_case_rnd (rng, (gsize) hid * in, 0.3, 0.0),
    mlp_case_rnd (rng, hid, 0.5, 0.0), in, hid, NULL
  };
  mc->fc2 = (EhatLinearW) { mlp_case_rnd (rng, (gsize) in * hid, 0.2, 0.0),
    mlp_case_rnd (rng, in, 0.5, 0.0), hid, in, NULL
  };
  mc->nw = (EhatNormW) { mlp_case_rnd (rng, in, 1.0, 0.0),
    mlp_case_rnd (rng, in, 1.0, 0.0)
  };
  return mc;
}

static inline void
mlp_case_free (MlpCase *mc)
{
  g_free (mc->x);
  g_free (mc->fc1.w);
  g_free (mc->fc1.b);
  g_free (mc->fc2.w);
  g_free (mc->fc2.b);
  g_free (mc->nw.w);
  g_free (mc->nw.b);
  g_free (mc);
}

/* Row r of GELU(fc1(LN(x))) in double into h[hid] (LN: two passes, eps
 * 1e-5, biased variance; exact-erf GELU); mag[o] (if not NULL) =
 * Σk |LN(x)k·W1ok|, the scale of the rounding error of output o.  Returns
 * Σ|h|, the same for fc2. */
static inline double
mlp_case_hidden (const MlpCase *mc, int r, double *h, double *mag)
{
  int in = mc->in;
  const float *xr = mc->x + (gsize) r * in;
  g_autofree double *ln = g_new (double, in);
  double mean = 0, var = 0, sum = 0;

  for (int k = 0; k < in; k++)
    mean += xr[k];
  mean /= in;
  for (int k = 0; k < in; k++)
    var += (xr[k] - mean) * (xr[k] - mean);
  var /= in;
  for (int k = 0; k < in; k++)
    ln[k] = (xr[k] - mean) / sqrt (var + 1e-5) * mc->nw.w[k] + mc->nw.b[k];
  for (int o = 0; o < mc->hid; o++) {
    double a = mc->fc1.b[o], m = 0;
    for (int k = 0; k < in; k++) {
      a += ln[k] * mc->fc1.w[o * in + k];
      m += fabs (ln[k] * mc->fc1.w[o * in + k]);
    }
    h[o] = 0.5 * a * (1.0 + erf (a / sqrt (2.0)));
    sum += fabs (h[o]);
    if (mag)
      mag[o] = m;
  }
  return sum;
}

/* ref = beta·x + fc2(GELU(fc1(LN(x)))) in double; mag[r] (if not NULL) =
 * Σ|hidden| of row r. */
static inline void
mlp_case_ref (const MlpCase *mc, float beta, double *ref, double *mag)
{
  int in = mc->in, hid = mc->hid;
  g_autofree double *h = g_new (double, hid);

  for (int r = 0; r < mc->rows; r++) {
    const float *xr = mc->x + (gsize) r * in;
    double m = mlp_case_hidden (mc, r, h, NULL);
    for (int o = 0; o < in; o++) {
      double a = mc->fc2.b[o] + (double) beta * xr[o];
      for (int k = 0; k < hid; k++)
        a += h[k] * mc->fc2.w[o * hid + k];
      ref[(gsize) r * in + o] = a;
    }
    if (mag)
      mag[r] = m;
  }
}

/* t (a copy of x on entry) = beta·t + MLP(LN(t)) through layernorm,
 * linear and linear, as the network runs it without the fused op. */
static inline void
mlp_case_unfused (EhatBackend *be, const MlpCase *mc, float beta, float *t)
{
  gsize rows = mc->rows;
  g_autofree float *n = g_new (float, rows * mc->in);
  g_autofree float *h = g_new (float, rows * mc->hid);

  be->ops->layernorm (be, &mc->nw, t, rows, mc->in, n);
  be->ops->linear (be, &mc->fc1, n, rows, h, EHAT_ACT_GELU, 0.0f);
  be->ops->linear (be, &mc->fc2, h, rows, t, EHAT_ACT_NONE, beta);
}

#endif /* MLP_CASE_H */
