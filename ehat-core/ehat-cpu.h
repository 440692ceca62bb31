/* Shared internals of the CPU backend: its state and vectorisable maths. */
#ifndef EHAT_CPU_H
#define EHAT_CPU_H

#include "ehat-backend.h"
#include "ehat-pool.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

G_BEGIN_DECLS

/* Hot loops are compiled for AVX-512 and AVX2 as well as the baseline, and
 * the best clone is picked at load time (glibc ifunc), so one binary runs
 * everywhere and still uses the machine's vector units. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) \
    && !defined(EHAT_NO_CLONES)
#define EHAT_CLONES \
  __attribute__ ((target_clones ("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define EHAT_CLONES
#endif

typedef struct
{
  EhatBackend parent;
  int n_threads;
  EhatPool *pool;
  char *description;
  /* per-thread working buffers of the convolution (im2col bands, shuffle
   * staging), kept between calls: allocating megabytes per call costs page
   * faults and leaves the heap fragmented */
  float **conv_col, **conv_tmp;
  gsize *conv_col_len, *conv_tmp_len;
  /* relative-position bias of the current attention layer, expanded to
   * [heads][queries][keys] once per call and shared by all windows */
  float *dense_bias;
  gsize dense_bias_len;
} EhatCpuBackend;

/* e^x for x ≤ 88.7, relative error ≈ 2 ulp; written so that loops over it
 * vectorise (no calls, no branches).  Inputs below −87.3 give ≈ 0. */
static inline float
ehat_expf (float x)
{
  const float magic = 12582912.0f;      /* 1.5·2^23: round to nearest */
  float r, p, n;
  union { float f; int32_t i; } s;

  x = x < 88.37f ? x : 88.37f;
  x = x > -87.3f ? x : -87.3f;
  n = (x * 1.44269504088896341f + magic) - magic;
  r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  s.i = ((int32_t) n + 127) << 23;
  return p * s.f;
}

/* erf(x) as a rational approximation on [−4, 4] (erf(±4) rounds to ±1 in
 * float), max error a few ulp; vectorisable like ehat_expf. */
static inline float
ehat_erff (float x)
{
  float x2, p, q;

  x = x < 4.0f ? x : 4.0f;
  x = x > -4.0f ? x : -4.0f;
  x2 = x * x;
  p = -2.72614225801306e-10f;
  p = p * x2 + 2.77068142495902e-08f;
  p = p * x2 + -2.10102402082508e-06f;
  p = p * x2 + -5.69250639462346e-05f;
  p = p * x2 + -7.34990630326855e-04f;
  p = p * x2 + -2.95459980854025e-03f;
  p = p * x2 + -1.60960333262415e-02f;
  p = p * x;
  q = -1.45660718464996e-05f;
  q = q * x2 + -2.13374055278905e-04f;
  q = q * x2 + -1.68282697438203e-03f;
  q = q * x2 + -7.37332916720468e-03f;
  q = q * x2 + -1.42647390514189e-02f;
  return p / q;
}

/* Exact (erf) GELU. */
static inline float
ehat_gelu (float x)
{
  return 0.5f * x * (1.0f + ehat_erff (x * 0.70710678118654752f));
}

/* Vectorised helpers used by the tests as well. */
void ehat_cpu_exp_inplace (float *x, gsize n);
void ehat_cpu_gelu_inplace (float *x, gsize n);

void ehat_cpu_window_attention (EhatBackend *be, const float *qkv, int n,
    int h, int w, int c, int heads, int ws, int shift, const float *table,
    const gint32 *index, float *out);
void ehat_cpu_overlap_attention (EhatBackend *be, const float *qkv, int n,
    int h, int w, int c, int heads, int ws, int wse, const float *table,
    const gint32 *index, float *out);

void ehat_cpu_position_attention (EhatBackend *be, const float *q,
    const float *k, const float *v, int n, gsize hw, int dq, int c,
    float gamma, float *out);
void ehat_cpu_channel_gram_attention (EhatBackend *be, const float *f, int n,
    gsize hw, int c, float gamma, float *out);

G_END_DECLS

#endif /* EHAT_CPU_H */
