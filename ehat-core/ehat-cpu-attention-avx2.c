/* Window attention on x86 CPUs with AVX2 and FMA but no AVX-512 (most
 * laptops and desktops, AMD before Zen 4), in fp32: the plan of the
 * AVX-512 kernel (ehat-cpu-attention.c) on 8-float vectors.
 *
 * Per (window, head): q (scaled by log2 e / √d), kᵀ and v gathered once
 * (kᵀ by 8×8 register transposes); per block of RB2 queries the scores
 * S = q·kᵀ + bias in 6×16 register tiles that start from the bias (the
 * Toeplitz runs of ehat-cpu-attention.c, or the dense table) and end
 * with the shift mask and the running row maxima; exp2 of S − max; then
 * P·v in 6×16 tiles scaled by 1/Σ and stored straight into the output
 * rows.  The portable kernel did each of those as a separate pass over S
 * (bias, mask, max, exp, normalise) and spent a third of its time in
 * scalar gathers and scatters. */
#include "ehat-cpu-attention.h"

#ifdef EHAT_X86_KERNELS
#include <immintrin.h>

#define T EHAT_T_AVX2
/* query rows per register tile: 6 rows × 2 vectors = 12 accumulators,
 * beside the two key (or value) vectors and the broadcast, in AVX2's 16
 * registers */
#define RB2 6

#define mask8 ehat_mask8

/* 8 floats from p, lanes [n, 8) zero and not read (n ≥ 1) */
T EHAT_INLINE __m256
load8_z (const float *p, int n)
{
  return n >= 8 ? _mm256_loadu_ps (p) : _mm256_maskload_ps (p, mask8 (n));
}

/* every lane: the maximum of x's lanes */
T EHAT_INLINE __m256
hmax8 (__m256 x)
{
  x = _mm256_max_ps (x, _mm256_permute2f128_ps (x, x, 1));
  x = _mm256_max_ps (x, _mm256_shuffle_ps (x, x, 0x4e));
  return _mm256_max_ps (x, _mm256_shuffle_ps (x, x, 0xb1));
}

/* 2^x for x ≤ 0: exp2_poly (relative error 2.3e-7) on 2^f, |f| ≤ ½,
 * times 2ⁿ built in the exponent field (AVX2 has no vscalefps); x ≤ −127
 * gives 0. */
T EHAT_INLINE __m256
exp2_8 (__m256 x)
{
  __m256 n, f, p;
  __m256i e;

  x = _mm256_max_ps (x, _mm256_set1_ps (-127.0f));
  n = _mm256_round_ps (x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  f = _mm256_sub_ps (x, n);
  p = _mm256_set1_ps (exp2_poly[0]);
#pragma GCC unroll 5
  for (int i = 1; i < 6; i++)
    p = _mm256_fmadd_ps (p, f, _mm256_set1_ps (exp2_poly[i]));
  e = _mm256_slli_epi32 (_mm256_add_epi32 (_mm256_cvtps_epi32 (n),
          _mm256_set1_epi32 (127)), 23);
  return _mm256_mul_ps (p, _mm256_castsi256_ps (e));
}

/* r[e] lane i ← r[i] lane e: 8 rows of 8 floats transposed in registers,
 * so that the gather writes k transposed with vector stores. */
T EHAT_INLINE void
transpose8 (__m256 r[8])
{
  __m256 t[8], u[8];

#pragma GCC unroll 4
  for (int i = 0; i < 4; i++) {
    t[2 * i] = _mm256_unpacklo_ps (r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps (r[2 * i], r[2 * i + 1]);
  }
  /* u[4i + k]: element k (low half) and 4 + k (high half) of rows 4i …
   * 4i + 3 */
#pragma GCC unroll 2
  for (int i = 0; i < 2; i++) {
    u[4 * i] = _mm256_shuffle_ps (t[4 * i], t[4 * i + 2], 0x44);
    u[4 * i + 1] = _mm256_shuffle_ps (t[4 * i], t[4 * i + 2], 0xee);
    u[4 * i + 2] = _mm256_shuffle_ps (t[4 * i + 1], t[4 * i + 3], 0x44);
    u[4 * i + 3] = _mm256_shuffle_ps (t[4 * i + 1], t[4 * i + 3], 0xee);
  }
#pragma GCC unroll 4
  for (int k = 0; k < 4; k++) {
    r[k] = _mm256_permute2f128_ps (u[k], u[4 + k], 0x20);
    r[4 + k] = _mm256_permute2f128_ps (u[k], u[4 + k], 0x31);
  }
}

/* The k and v parts of keys [t0, t0 + 8). */
static inline void
prefetch_keys (const AttnJob *j, const Fast *f, int t0)
{
  for (int t = t0; t < t0 + 8; t++) {
    prefetch_part (j, f->kpos, t, j->nk, 1);
    prefetch_part (j, f->kpos, t, j->nk, 2);
  }
}

/* q (scaled) [nq][d], kᵀ [d][nkp] (keys past nk: zero columns) and
 * v [nk][dv] (columns past d zero) of heads h0 … h0 + nh − 1. */
T void
ehat_cpu_attn_gather_avx2 (const AttnJob *j, Fast *f, int h0, int nh)
{
  int d = j->d, nkp = f->nkp, dv = f->dv;
  __m256 sc = _mm256_set1_ps (j->scale * (float) LOG2E);

  for (int t = 0; t < j->nq; t++) {
    prefetch_part (j, f->qpos, t + PF, j->nq, 0);
    for (int s = 0; s < nh; s++) {
      const float *row = q_row (j, f, t, h0 + s);
      float *dst = f->q_all + s * f->qsz + (gsize) t * d;
      /* rows are d apart: a tail's whole-vector store would overwrite
       * the next row, or the next head's first */
      for (int e = 0; e < d; e += 8)
        ehat_store8_n (dst + e, _mm256_mul_ps (sc, load8_z (row + e, d - e)),
            d - e);
    }
  }
  prefetch_keys (j, f, 0);
  for (int t0 = 0; t0 < j->nk; t0 += 8) {
    prefetch_keys (j, f, t0 + 8);
    for (int s = 0; s < nh; s++) {
      float *kT = f->kT_all + s * f->ksz + t0, *v = f->v_all + s * f->vsz;
      for (int e0 = 0; e0 < d; e0 += 8) {
        __m256 r[8];
        for (int i = 0; i < 8; i++)
          r[i] = load8_z (k_row (j, f, t0 + i, h0 + s) + e0, d - e0);
        transpose8 (r);
        for (int e = e0; e < MIN (d, e0 + 8); e++)
          _mm256_storeu_ps (kT + (gsize) e * nkp, r[e - e0]);
      }
      for (int t = t0; t < MIN (t0 + 8, j->nk); t++) {
        const float *vr = v_row (j, f, t, h0 + s);
        for (int e = 0; e < d; e += 8)
          _mm256_storeu_ps (v + (gsize) t * dv + e, load8_z (vr + e, d - e));
      }
    }
  }
}

/* The accumulators of an S tile start as the bias of its queries (rows
 * past the block's repeat its last) and its 16 keys at j0.  Lanes past
 * nk load whatever follows (the tables are padded) and are masked in
 * qk_store. */
T EHAT_INLINE void
bias_init (__m256 acc[RB2][2], const AttnJob *j, int i0, int rows, int j0,
    const float *bias)
{
  if (j->toeplitz) {
    const __m256i bit = _mm256_setr_epi32 (1, 2, 4, 8, 16, 32, 64, 128);
    int off[2], off2[2];
    gboolean two[2];
    __m256 m2[2];
#pragma GCC unroll 2
    for (int v = 0; v < 2; v++) {
      int vi = j0 / 8 + v;
      off[v] = j->voff[vi];
      off2[v] = j->voff2[vi];
      two[v] = j->vm2[vi] != 0;
      m2[v] = _mm256_castsi256_ps (_mm256_cmpeq_epi32 (_mm256_and_si256
              (_mm256_set1_epi32 (j->vm2[vi]), bit), bit));
    }
#pragma GCC unroll 6
    for (int r = 0; r < RB2; r++) {
      const float *e = bias + j->qa[i0 + MIN (r, rows - 1)];
#pragma GCC unroll 2
      for (int v = 0; v < 2; v++) {
        __m256 x = _mm256_loadu_ps (e + off[v]);
        /* a vector that straddles two rows of keys: its lanes of the
         * second row from that row's run */
        if (two[v])
          x = _mm256_blendv_ps (x, _mm256_loadu_ps (e + off2[v]), m2[v]);
        acc[r][v] = x;
      }
    }
    return;
  }
#pragma GCC unroll 6
  for (int r = 0; r < RB2; r++) {
    const float *b = bias + (gsize) (i0 + MIN (r, rows - 1)) * j->nk + j0;
    acc[r][0] = _mm256_loadu_ps (b);
    acc[r][1] = _mm256_loadu_ps (b + 8);
  }
}

/* S tile epilogue: −100 where the key's shift region differs from the
 * query's, the running row maxima over the valid keys, the store. */
T EHAT_INLINE void
qk_store (__m256 acc[RB2][2], const AttnJob *j, Fast *f, int i0, int rows,
    int j0)
{
  /* locals: the vector stores below may alias anything */
  const gboolean mask = f->mask, all = j->nk - j0 >= 16;
  const gint8 *reg = f->reg;
  const int nkp = f->nkp;
  float (*rmax)[16] = f->rmax;
  float *S = f->S;
  const __m256 low = _mm256_set1_ps (-G_MAXFLOAT);
  const __m256 pen = _mm256_set1_ps ((float) (-100.0 * LOG2E));
  __m256 valid[2];
  __m256i rk[2];

#pragma GCC unroll 2
  for (int v = 0; v < 2; v++) {
    valid[v] = _mm256_castsi256_ps (mask8 (j->nk - j0 - 8 * v));
    rk[v] = mask ? _mm256_cvtepi8_epi32 (_mm_loadl_epi64 ((const __m128i *)
            (reg + j0 + 8 * v))) : _mm256_setzero_si256 ();
  }
#pragma GCC unroll 6
  for (int r = 0; r < RB2; r++) {
    if (r >= rows)
      break;
    __m256i rq = _mm256_set1_epi32 (reg[i0 + r]);
    __m256 mx = _mm256_loadu_ps (rmax[r]);
    float *sr = S + (gsize) r * nkp + j0;
#pragma GCC unroll 2
    for (int v = 0; v < 2; v++) {
      __m256 x = acc[r][v];
      if (mask)
        x = _mm256_add_ps (x, _mm256_andnot_ps (_mm256_castsi256_ps
                (_mm256_cmpeq_epi32 (rk[v], rq)), pen));
      mx = _mm256_max_ps (mx, all ? x : _mm256_blendv_ps (low, x, valid[v]));
      _mm256_storeu_ps (sr + 8 * v, x);
    }
    _mm256_storeu_ps (rmax[r], mx);
  }
}

/* S rows [i0, i0 + rows) over all keys, in tiles of 16 keys. */
T static void
scores (const AttnJob *j, Fast *f, int i0, int rows, const float *bias)
{
  int d = j->d, nkp = f->nkp;
  const float *qr[RB2];

#pragma GCC unroll 6
  for (int r = 0; r < RB2; r++) {
    qr[r] = f->q + (gsize) (i0 + MIN (r, rows - 1)) * d;
    _mm256_storeu_ps (f->rmax[r], _mm256_set1_ps (-G_MAXFLOAT));
  }
  for (int j0 = 0; j0 < nkp; j0 += 16) {
    __m256 acc[RB2][2];
    const float *kr = f->kT + j0;

    bias_init (acc, j, i0, rows, j0, bias);
    for (int e = 0; e < d; e++, kr += nkp) {
      __m256 b0 = _mm256_loadu_ps (kr), b1 = _mm256_loadu_ps (kr + 8);
#pragma GCC unroll 6
      for (int r = 0; r < RB2; r++) {
        __m256 a = _mm256_broadcast_ss (qr[r] + e);
        acc[r][0] = _mm256_fmadd_ps (a, b0, acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps (a, b1, acc[r][1]);
      }
    }
    qk_store (acc, j, f, i0, rows, j0);
  }
}

/* Unnormalised softmax of each score row over the nk keys: exp2(s − max)
 * back into S (keys past nk zero), 1/Σ in inv. */
T static void
softmax_rows (Fast *f, int nk, int rows, float *inv)
{
  for (int r = 0; r < rows; r++) {
    float *s = f->S + (gsize) r * f->nkp;
    __m256 mx = hmax8 (_mm256_loadu_ps (f->rmax[r]));
    __m256 sum = _mm256_setzero_ps ();
    for (int j0 = 0; j0 < nk; j0 += 8) {
      __m256 x = exp2_8 (_mm256_sub_ps (_mm256_loadu_ps (s + j0), mx));
      if (nk - j0 < 8)
        x = _mm256_and_ps (x, _mm256_castsi256_ps (mask8 (nk - j0)));
      sum = _mm256_add_ps (sum, x);
      _mm256_storeu_ps (s + j0, x);
    }
    inv[r] = 1.0f / ehat_hsum8 (sum);
  }
}

/* Output columns [c0, c0 + 8·nv) ∩ [c0, d) of rows [i0, i0 + rows):
 * P·v / Σ, into the output rows of head hd. */
T EHAT_INLINE void
pv_tile (int nv, const AttnJob *j, const Fast *f, int i0, int rows, int c0,
    const float *inv, int hd)
{
  __m256 acc[RB2][2];
  const float *pr[RB2], *vr = f->v + c0;
  int n = j->d - c0;

#pragma GCC unroll 6
  for (int r = 0; r < RB2; r++) {
    pr[r] = f->S + (gsize) MIN (r, rows - 1) * f->nkp;
    acc[r][0] = acc[r][1] = _mm256_setzero_ps ();
  }
  for (int t = 0; t < j->nk; t++, vr += f->dv) {
    __m256 v0 = _mm256_loadu_ps (vr);
    __m256 v1 = nv > 1 ? _mm256_loadu_ps (vr + 8) : _mm256_setzero_ps ();
#pragma GCC unroll 6
    for (int r = 0; r < RB2; r++) {
      __m256 p = _mm256_broadcast_ss (pr[r] + t);
      acc[r][0] = _mm256_fmadd_ps (p, v0, acc[r][0]);
      if (nv > 1)
        acc[r][1] = _mm256_fmadd_ps (p, v1, acc[r][1]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < RB2; r++) {
    if (r >= rows)
      break;
    float *o = j->out + f->qpos[i0 + r] * (gsize) j->c + (gsize) hd * j->d
        + c0;
    __m256 sc = _mm256_set1_ps (inv[r]);
    ehat_store8_n (o, _mm256_mul_ps (acc[r][0], sc), n);
    if (nv > 1)
      ehat_store8_n (o + 8, _mm256_mul_ps (acc[r][1], sc), n - 8);
  }
}

T static void
pv_2 (const AttnJob *j, const Fast *f, int i0, int rows, int c0,
    const float *inv, int hd)
{
  pv_tile (2, j, f, i0, rows, c0, inv, hd);
}

T static void
pv_1 (const AttnJob *j, const Fast *f, int i0, int rows, int c0,
    const float *inv, int hd)
{
  pv_tile (1, j, f, i0, rows, c0, inv, hd);
}

/* Head hd, gathered in slot `slot`; bias: its Toeplitz table or its
 * [nq][nk] dense one, in log2 units. */
T void
ehat_cpu_attn_head_avx2 (const AttnJob *j, Fast *f, int hd, int slot,
    const float *bias)
{
  float inv[RB2];

  f->q = f->q_all + slot * f->qsz;
  f->kT = f->kT_all + slot * f->ksz;
  f->v = f->v_all + slot * f->vsz;
  for (int i0 = 0; i0 < j->nq; i0 += RB2) {
    int rows = MIN (RB2, j->nq - i0);
    scores (j, f, i0, rows, bias);
    softmax_rows (f, j->nk, rows, inv);
    for (int c0 = 0; c0 < j->d; c0 += 16) {
      if (j->d - c0 > 8)
        pv_2 (j, f, i0, rows, c0, inv, hd);
      else
        pv_1 (j, f, i0, rows, c0, inv, hd);
    }
  }
}
#endif /* EHAT_X86_KERNELS */
