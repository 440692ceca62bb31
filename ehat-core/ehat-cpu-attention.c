/* Fused window attention for the CPU backend (HAB's shifted-window
 * self-attention and OCAB's overlapping cross-attention).
 *
 * One task = one (image, window, head).  Its q, k and v are gathered
 * straight from the qkv rows of the feature map (the cyclic shift and the
 * OCAB unfold are just index arithmetic, so no shifted or unfolded copy of
 * the map ever exists), scores get the dense relative-position bias and the
 * shift mask inside the softmax, and the result is scattered back to the
 * token rows it came from. */
#include "ehat-cpu-attention.h"

/* The portable kernel (x86 without AVX2 or with EHAT_CPU_NO_AVX2, other
 * architectures, heads wider than 32), on ehat-cpu.h's vectors of EHAT_VL
 * floats.  Its register blocks (RB rows × 2 vectors: 8 accumulators) fit
 * AVX2's 16 registers with the operands beside them; 16-float vectors with
 * 8-row blocks, as it once had, made GCC spill every accumulator and build
 * each broadcast through the stack. */
typedef EhatVec vec;

#define VW EHAT_VL              /* floats per vector */
#define JB (2 * VW)             /* key / value columns per block */
#define RB 4                    /* query rows per register block */
#define loadv ehat_vec_load
#define storev ehat_vec_store

static inline int
round_up (int v, int m)
{
  return (v + m - 1) / m * m;
}

/* Softmax of a row of nk scores in place. */
static inline void
softmax_row (float *s, int nk)
{
  int n8 = nk / VW * VW;
  float mx = -G_MAXFLOAT, inv;
  vec vm = (vec) { 0 } - G_MAXFLOAT;

  for (int j = 0; j < n8; j += VW) {
    vec x = loadv (s + j);
    vm = ehat_vec_select (x > vm, x, vm);
  }
  for (int l = 0; l < VW; l++)
    mx = vm[l] > mx ? vm[l] : mx;
  for (int j = n8; j < nk; j++)
    mx = s[j] > mx ? s[j] : mx;
  inv = 1.0f / ehat_exp_shifted (s, nk, mx);
#pragma omp simd
  for (int j = 0; j < nk; j++)
    s[j] *= inv;
}

/* The register block of both products: c[r][0, JB) = Σk a[r·lda + k] ·
 * b[k·ldb + (0, JB)] for the 4 (= RB) rows r. */
static inline void
mul_4x2 (const float *a, gsize lda, const float *b, gsize ldb, int n,
    float *c, gsize ldc)
{
  vec a0 = { 0 }, a1 = { 0 }, a2 = { 0 }, a3 = { 0 };
  vec b0 = { 0 }, b1 = { 0 }, b2 = { 0 }, b3 = { 0 };

  for (int k = 0; k < n; k++, b += ldb) {
    vec v0 = loadv (b), v1 = loadv (b + VW);
    float s0 = a[k], s1 = a[lda + k], s2 = a[2 * lda + k];
    float s3 = a[3 * lda + k];
    a0 += s0 * v0;
    b0 += s0 * v1;
    a1 += s1 * v0;
    b1 += s1 * v1;
    a2 += s2 * v0;
    b2 += s2 * v1;
    a3 += s3 * v0;
    b3 += s3 * v1;
  }
  storev (c, a0);
  storev (c + VW, b0);
  storev (c + ldc, a1);
  storev (c + ldc + VW, b1);
  storev (c + 2 * ldc, a2);
  storev (c + 2 * ldc + VW, b2);
  storev (c + 3 * ldc, a3);
  storev (c + 3 * ldc + VW, b3);
}

/* softmax(q·kᵀ + bias + mask)·v for nqp queries (nqp % RB == 0; rows past
 * the real ones are zero and their output ignored).
 * q [nqp][d] pre-scaled; kT [d][nkp] (columns ≥ nk zero, nkp % JB == 0);
 * v [nk][dp] (columns ≥ d zero, dp % JB == 0); bias [nq][nk] (rows ≥ nq
 * not read); regq/regk: shift-mask regions or NULL; S: scratch [RB][nkp];
 * o [nqp][dp]. */
EHAT_CLONES static void
attend (const float *q, int d, int nq, int nqp, const float *kT, int nk,
    int nkp, const float *v, int dp, const float *bias, const gint8 *regq,
    const gint8 *regk, float *S, float *o)
{
  for (int i0 = 0; i0 < nqp; i0 += RB) {
    int rows = MIN (RB, nq - i0);
    const float *qi = q + (gsize) i0 * d;

    for (int j0 = 0; j0 < nkp; j0 += JB)
      mul_4x2 (qi, d, kT + j0, nkp, d, S + j0, nkp);

    for (int r = 0; r < rows; r++) {
      float *s = S + r * nkp;
      const float *b = bias + (gsize) (i0 + r) * nk;

#pragma omp simd
      for (int j = 0; j < nk; j++)
        s[j] += b[j];
      if (regq) {
        gint8 rq = regq[i0 + r];
#pragma omp simd
        for (int j = 0; j < nk; j++)
          s[j] += regk[j] != rq ? -100.0f : 0.0f;
      }
      softmax_row (s, nk);
    }
    for (int r = rows; r < RB; r++)
      memset (S + r * nkp, 0, nk * sizeof (float));

    for (int c0 = 0; c0 < dp; c0 += JB)
      mul_4x2 (S, nkp, v + c0, dp, nk, o + (gsize) i0 * dp + c0, dp);
  }
}

typedef struct _Scratch
{
  float *q, *kT, *v, *S, *o;
  gsize *qpos;                  /* row index of each query token */
  gsize *kpos;                  /* row index of each key, or G_MAXSIZE */
  gint8 *reg;
} Scratch;

static void
scratch_init (Scratch *s, int nq, int nk, int d, int dp)
{
  int nkp = round_up (nk, JB), nqp = round_up (nq, RB);
  /* rows past nq stay zero */
  s->q = g_new0 (float, (gsize) nqp * d);
  s->kT = g_new0 (float, (gsize) d * nkp);
  s->v = g_new0 (float, (gsize) nk * dp);
  s->S = g_new (float, (gsize) RB * nkp);
  s->o = g_new (float, (gsize) nqp * dp);
  s->qpos = g_new (gsize, nq);
  s->kpos = g_new (gsize, nk);
  s->reg = g_new (gint8, nq);
}

static void
scratch_clear (Scratch *s)
{
  g_free (s->q);
  g_free (s->kT);
  g_free (s->v);
  g_free (s->S);
  g_free (s->o);
  g_free (s->qpos);
  g_free (s->kpos);
  g_free (s->reg);
}

/* Gathers head hd's q (scaled), k and v; keys at kpos G_MAXSIZE are the
 * zero vectors of OCAB's padding (kT and v were zeroed for them). */
static void
gather (Scratch *s, const float *qkv, int c, int hd, int d, int dp, int nq,
    int nk, int nkp, float scale)
{
  const gsize stride = 3 * (gsize) c;

  for (int t = 0; t < nq; t++) {
    const float *row = qkv + s->qpos[t] * stride + hd * d;
    for (int e = 0; e < d; e++)
      s->q[t * d + e] = row[e] * scale;
  }
  for (int t = 0; t < nk; t++) {
    if (s->kpos[t] == G_MAXSIZE) {
      for (int e = 0; e < d; e++) {
        s->kT[(gsize) e * nkp + t] = 0.0f;
        s->v[(gsize) t * dp + e] = 0.0f;
      }
      continue;
    }
    const float *row = qkv + s->kpos[t] * stride + c + hd * d;
    for (int e = 0; e < d; e++) {
      s->kT[(gsize) e * nkp + t] = row[e];
      s->v[(gsize) t * dp + e] = row[c + e];
    }
  }
}

static void
scatter (const Scratch *s, float *out, int c, int hd, int d, int dp, int nq)
{
  for (int t = 0; t < nq; t++)
    memcpy (out + s->qpos[t] * c + hd * d, s->o + (gsize) t * dp,
        d * sizeof (float));
}

typedef struct
{
  const float *table;
  const gint32 *index;
  float *dense;
  int heads;
  gsize nqk;
  float mul;
} BiasJob;

static void
expand_heads (gpointer data, gsize begin, gsize end, int thread)
{
  const BiasJob *j = data;
  for (gsize hd = begin; hd < end; hd++) {
    float *d = j->dense + hd * j->nqk;
    for (gsize ij = 0; ij < j->nqk; ij++)
      d[ij] = j->table[j->index[ij] * j->heads + hd] * j->mul;
  }
}

/* [L][heads] table → [heads][nq][nk], reused across the backend's calls. */
/* ×mul: log2(e) for the x86 kernels, which work in powers of 2. */
static const float *
expand_bias (EhatBackend *be, const float *table, const gint32 *index,
    int heads, int nq, int nk, float mul)
{
  EhatCpuBackend *cpu = (EhatCpuBackend *) be;
  gsize n = (gsize) heads * nq * nk;
  BiasJob j;

  if (cpu->dense_bias_len < n) {
    g_free (cpu->dense_bias);
    /* + 16: the AVX2 kernel loads whole vectors of a row's last keys */
    cpu->dense_bias = g_new0 (float, n + 16);
    cpu->dense_bias_len = n;
  }
  j = (BiasJob) { table, index, cpu->dense_bias, heads, (gsize) nq * nk,
    mul
  };
  ehat_pool_parallel_for (cpu->pool, heads, 1, expand_heads, &j);
  return cpu->dense_bias;
}

/* Shift-mask region of a coordinate of the shifted map (EHAT-SPEC.md §4). */
static inline gint8
region (int p, int size, int ws, int shift)
{
  return p < size - ws ? 0 : (p < size - shift ? 1 : 2);
}

/* Where window win's tokens are in the qkv rows: qpos[t] for query t,
 * kpos[t] for key t (G_MAXSIZE: OCAB's zero padding past the border), and
 * reg[t], the shift mask's region of query t (0 without a shift). */
static void
window_positions (const AttnJob *j, gsize win, gsize *qpos, gsize *kpos,
    gint8 *reg)
{
  int ws = j->ws, h = j->h, w = j->w, shift = j->shift;
  int wx = win % j->nwx, wy = (win / j->nwx) % j->nwy;
  gsize img = win / ((gsize) j->nwx * j->nwy);

  if (!j->overlap) {
    /* Token t of the shifted map's window sits at (py, px); the map was
     * rolled by −shift, so it came from (py + shift, px + shift). */
    for (int t = 0; t < j->nq; t++) {
      int py = wy * ws + t / ws, px = wx * ws + t % ws;
      int sy = (py + shift) % h, sx = (px + shift) % w;
      qpos[t] = (img * h + sy) * w + sx;
      kpos[t] = qpos[t];
      reg[t] = shift ? region (py, h, ws, shift) * 3
          + region (px, w, ws, shift) : 0;
    }
  } else {
    /* queries: the unshifted window; keys: the wse square around it */
    int pad = (j->wse - ws) / 2;
    for (int t = 0; t < j->nq; t++)
      qpos[t] = (img * h + wy * ws + t / ws) * w + wx * ws + t % ws;
    for (int t = 0; t < j->nk; t++) {
      int ky = wy * ws - pad + t / j->wse, kx = wx * ws - pad + t % j->wse;
      kpos[t] = (ky < 0 || ky >= h || kx < 0 || kx >= w) ? G_MAXSIZE
          : (img * h + ky) * w + kx;
    }
  }
}

static void
attn_tasks (gpointer data, gsize begin, gsize end, int thread)
{
  const AttnJob *j = data;
  Scratch *s = &j->scratch[thread];

  for (gsize task = begin; task < end; task++) {
    int hd = task % j->heads;

    window_positions (j, task / j->heads, s->qpos, s->kpos, s->reg);
    gather (s, j->qkv, j->c, hd, j->d, j->dp, j->nq, j->nk, j->nkp,
        j->scale);
    attend (s->q, j->d, j->nq, round_up (j->nq, RB), s->kT, j->nk, j->nkp,
        s->v, j->dp, j->bias + (gsize) hd * j->nq * j->nk,
        j->shift ? s->reg : NULL, s->reg, s->S, s->o);
    scatter (s, j->out, j->c, hd, j->d, j->dp, j->nq);
  }
}

/* ---- AVX-512 path ----
 *
 * Per (window, head): q (scaled), k and v are gathered in the layouts of
 * the kernels — fp32: q [nq][d], kᵀ [d][nkp], v [nk][dv]; bf16: q rows of
 * bf16, k as [d/2][nkp] pairs (vdpbf16ps multiplies pairs of the head
 * dimension), v as [nk/2][dv] pairs (pairs of keys).  Then per block of
 * ARB queries: S = q·kᵀ + bias + mask (8×48 register tiles, the bias and
 * mask in the tile's epilogue), softmax rows (fp32, exp unnormalised),
 * O = P·v scaled by 1/Σ in the epilogue and stored straight into the
 * output rows. */
#ifdef EHAT_X86_KERNELS
#include <immintrin.h>

static void
attn_fast_init (AttnJob *j, int n_threads)
{
  int nkp = round_up (j->nk, 16), dv = round_up (j->d, 16);
  int dq2 = round_up (j->d, 2);

  j->fast_scratch = g_new0 (Fast, n_threads);
  for (int t = 0; t < n_threads; t++) {
    Fast *f = &j->fast_scratch[t];
    f->nkp = nkp;
    f->dv = dv;
    f->dq2 = dq2;
    f->dpairs = dq2 / 2;
    f->qpos = g_new (gsize, j->nq);
    f->kpos = g_new (gsize, j->nk);
    f->reg = g_new0 (gint8, nkp + 64);
    /* columns and rows past nk / d are zero and never written */
    if (j->bf16) {
      f->qsz = (gsize) round_up (j->nq, ARB) * f->dpairs;
      f->ksz = (gsize) f->dpairs * nkp;
      f->vsz = (gsize) (nkp / 2 + 1) * dv;
      f->qw_all = g_new0 (guint32, f->qsz * j->task_heads);
      f->kw_all = g_new0 (guint32, f->ksz * j->task_heads);
      f->vw_all = g_new0 (guint32, f->vsz * j->task_heads);
      f->P = g_new0 (guint16, (gsize) ARB * nkp);
    } else {
      f->qsz = (gsize) round_up (j->nq, ARB) * j->d;
      f->ksz = (gsize) j->d * nkp;
      f->vsz = (gsize) (nkp + 1) * dv;
      f->q_all = g_new0 (float, f->qsz * j->task_heads);
      f->kT_all = g_new0 (float, f->ksz * j->task_heads);
      f->v_all = g_new0 (float, f->vsz * j->task_heads);
    }
    f->S = g_new0 (float, (gsize) ARB * nkp);
  }
}

static void
attn_fast_clear (AttnJob *j, int n_threads)
{
  for (int t = 0; t < n_threads; t++) {
    Fast *f = &j->fast_scratch[t];
    g_free (f->qpos);
    g_free (f->kpos);
    g_free (f->reg);
    g_free (f->qw_all);
    g_free (f->kw_all);
    g_free (f->vw_all);
    g_free (f->P);
    g_free (f->q_all);
    g_free (f->kT_all);
    g_free (f->v_all);
    g_free (f->S);
  }
  g_free (j->fast_scratch);
}

static inline __mmask16
lanes (int n)
{
  return n >= 16 ? 0xffff : n <= 0 ? 0 : (__mmask16) ((1u << n) - 1);
}

/* 2^x on 16 lanes for x ≤ 0: 2^f (|f| ≤ ½) by a polynomial fitted for
 * relative error (degree 5: 2.3e-7, like ehat_expf; degree 3: 7.5e-5,
 * enough for probabilities rounded to bf16 next), scaled by 2ⁿ with
 * vscalefps.  Scores are kept in log2 units (q and the bias multiplied by
 * log2 e) so that no multiplication is needed here. */
EHAT_T_F32 EHAT_INLINE __m512
exp2_16 (__m512 x, gboolean coarse)
{
  __m512 n, f, p;

  x = _mm512_max_ps (x, _mm512_set1_ps (-127.0f));
  n = _mm512_roundscale_ps (x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  f = _mm512_sub_ps (x, n);
  if (coarse) {
    p = _mm512_set1_ps (5.517159775e-02f);
    p = _mm512_fmadd_ps (p, f, _mm512_set1_ps (2.426111102e-01f));
    p = _mm512_fmadd_ps (p, f, _mm512_set1_ps (6.932610273e-01f));
    p = _mm512_fmadd_ps (p, f, _mm512_set1_ps (9.999280572e-01f));
  } else {
    p = _mm512_set1_ps (exp2_poly[0]);
#pragma GCC unroll 5
    for (int i = 1; i < 6; i++)
      p = _mm512_fmadd_ps (p, f, _mm512_set1_ps (exp2_poly[i]));
  }
  return _mm512_scalef_ps (p, n);
}

/* Lanes [0, min(d, 16)) of a row: a plain load when all 16 are there. */
EHAT_T_F32 EHAT_INLINE __m512
load_head (const float *p, int d)
{
  if (d >= 16)
    return _mm512_loadu_ps (p);
  return _mm512_maskz_loadu_ps (lanes (d), p);
}

/* Lanes [16, d) of a row (d ≤ 32), zero above: a 256-bit load when they
 * fit one. */
EHAT_T_F32 EHAT_INLINE __m512
load_tail (const float *p, int d)
{
  if (d <= 16)
    return _mm512_setzero_ps ();
  if (d == 24)
    return _mm512_zextps256_ps512 (_mm256_loadu_ps (p));
  if (d < 24)
    return _mm512_zextps256_ps512 (_mm256_maskz_loadu_ps ((__mmask8)
            lanes (d - 16), p));
  return _mm512_maskz_loadu_ps (lanes (d - 16), p);
}

/* r[e] lane i ← r[i] lane e: 16 rows of 16 dwords transposed in registers
 * (two unpack stages within 128-bit lanes, then 4×4 blocks of lanes), so
 * that the gathers write k transposed with vector stores. */
EHAT_T_F32 EHAT_INLINE void
transpose16 (__m512i r[16])
{
  __m512i t[16];

#pragma GCC unroll 8
  for (int i = 0; i < 8; i++) {
    t[2 * i] = _mm512_unpacklo_epi32 (r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32 (r[2 * i], r[2 * i + 1]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; i++) {
    r[4 * i] = _mm512_unpacklo_epi64 (t[4 * i], t[4 * i + 2]);
    r[4 * i + 1] = _mm512_unpackhi_epi64 (t[4 * i], t[4 * i + 2]);
    r[4 * i + 2] = _mm512_unpacklo_epi64 (t[4 * i + 1], t[4 * i + 3]);
    r[4 * i + 3] = _mm512_unpackhi_epi64 (t[4 * i + 1], t[4 * i + 3]);
  }
  /* r[4i + k], lane L: element 4L + k of rows 4i … 4i + 3 */
#pragma GCC unroll 4
  for (int k = 0; k < 4; k++) {
    __m512i a = _mm512_shuffle_i32x4 (r[k], r[4 + k], 0x88);
    __m512i b = _mm512_shuffle_i32x4 (r[k], r[4 + k], 0xdd);
    __m512i c = _mm512_shuffle_i32x4 (r[8 + k], r[12 + k], 0x88);
    __m512i d = _mm512_shuffle_i32x4 (r[8 + k], r[12 + k], 0xdd);
    t[k] = _mm512_shuffle_i32x4 (a, c, 0x88);
    t[8 + k] = _mm512_shuffle_i32x4 (a, c, 0xdd);
    t[4 + k] = _mm512_shuffle_i32x4 (b, d, 0x88);
    t[12 + k] = _mm512_shuffle_i32x4 (b, d, 0xdd);
  }
#pragma GCC unroll 16
  for (int i = 0; i < 16; i++)
    r[i] = t[i];
}

/* Prefetches the k (and v) parts of the next block of 16 keys. */
static inline void
prefetch_keys (const AttnJob *j, const Fast *f, int t0, gboolean v)
{
  for (int i = 0; i < 16; i++) {
    prefetch_part (j, f->kpos, t0 + i, j->nk, 1);
    if (v)
      prefetch_part (j, f->kpos, t0 + i, j->nk, 2);
  }
}

EHAT_T_F32 static void
gather_f32 (const AttnJob *j, Fast *f, int h0, int nh)
{
  int d = j->d, nkp = f->nkp, dv = f->dv;
  __mmask16 m1 = lanes (d - 16);
  __m512 sc = _mm512_set1_ps (j->scale * (float) LOG2E);

  /* q (scaled) row-major */
  for (int t = 0; t < j->nq; t++) {
    prefetch_part (j, f->qpos, t + PF, j->nq, 0);
    for (int s = 0; s < nh; s++) {
      const float *row = q_row (j, f, t, h0 + s);
      float *dst = f->q_all + s * f->qsz + (gsize) t * d;
      _mm512_mask_storeu_ps (dst, lanes (d), _mm512_mul_ps (sc,
              load_head (row, d)));
      if (m1)
        _mm512_mask_storeu_ps (dst + 16, m1, _mm512_mul_ps (sc,
                load_tail (row + 16, d)));
    }
  }
  /* kᵀ by blocks of 16 keys (keys past nk: zero rows), v row-major */
  prefetch_keys (j, f, 0, TRUE);
  for (int t0 = 0; t0 < j->nk; t0 += 16) {
    prefetch_keys (j, f, t0 + 16, TRUE);
    for (int s = 0; s < nh; s++) {
      float *kT = f->kT_all + s * f->ksz + t0, *v = f->v_all + s * f->vsz;
      /* channels 0–15, then 16–31 (heads wider than 16) */
      for (int e0 = 0; e0 < d; e0 += 16) {
        __m512i r[16];
        for (int i = 0; i < 16; i++) {
          const float *kr = k_row (j, f, t0 + i, h0 + s);
          r[i] = _mm512_castps_si512 (e0 ? load_tail (kr + 16, d)
              : load_head (kr, d));
        }
        transpose16 (r);
        for (int e = e0; e < MIN (d, e0 + 16); e++)
          _mm512_storeu_si512 (kT + (gsize) e * nkp, r[e - e0]);
      }
      for (int t = t0; t < MIN (t0 + 16, j->nk); t++) {
        const float *vr = v_row (j, f, t, h0 + s);
        _mm512_storeu_ps (v + (gsize) t * dv, load_head (vr, d));
        if (m1)
          _mm512_storeu_ps (v + (gsize) t * dv + 16, load_tail (vr + 16, d));
      }
    }
  }
}

EHAT_T_BF16 static void
gather_bf16 (const AttnJob *j, Fast *f, int h0, int nh)
{
  int d = j->d, nkp = f->nkp, dv = f->dv, np = f->dpairs;
  __mmask16 m1 = lanes (d - 16);
  __m512 sc = _mm512_set1_ps (j->scale * (float) LOG2E);
  /* word i of the result = (a_i, b_i): a from lanes 0–15, b from 16–31 */
  const __m512i inter = _mm512_set_epi16 (31, 15, 30, 14, 29, 13, 28, 12,
      27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2,
      17, 1, 16, 0);

  /* q (scaled) row-major, rows of np pairs */
  for (int t = 0; t < j->nq; t++) {
    prefetch_part (j, f->qpos, t + PF, j->nq, 0);
    for (int s = 0; s < nh; s++) {
      const float *row = q_row (j, f, t, h0 + s);
      __m512 lo = _mm512_mul_ps (sc, load_head (row, d));
      __m512 hi = _mm512_mul_ps (sc, load_tail (row + 16, d));
      _mm512_mask_storeu_epi32 (f->qw_all + s * f->qsz + (gsize) t * np,
          lanes (np), (__m512i) _mm512_cvtne2ps_pbh (hi, lo));
    }
  }
  /* k as [pair][key], by blocks of 16 keys (keys past nk: zero rows) */
  prefetch_keys (j, f, 0, FALSE);
  for (int t0 = 0; t0 < j->nk; t0 += 16) {
    prefetch_keys (j, f, t0 + 16, FALSE);
    for (int s = 0; s < nh; s++) {
      guint32 *kw = f->kw_all + s * f->ksz + t0;
      __m512i r[16];
      for (int i = 0; i < 16; i++) {
        const float *kr = k_row (j, f, t0 + i, h0 + s);
        r[i] = (__m512i) _mm512_cvtne2ps_pbh (load_tail (kr + 16, d),
            load_head (kr, d));
      }
      transpose16 (r);
      for (int p = 0; p < np; p++)
        _mm512_storeu_si512 (kw + (gsize) p * nkp, r[p]);
    }
  }
  for (int u = 0; u < (j->nk + 1) / 2; u++) {
    prefetch_part (j, f->kpos, 2 * u + PF, j->nk, 2);
    prefetch_part (j, f->kpos, 2 * u + 1 + PF, j->nk, 2);
    for (int s = 0; s < nh; s++) {
      const float *a = v_row (j, f, 2 * u, h0 + s);
      const float *b = v_row (j, f, 2 * u + 1, h0 + s);
      guint32 *dst = f->vw_all + s * f->vsz + (gsize) u * dv;
      _mm512_storeu_si512 (dst, _mm512_permutexvar_epi16 (inter,
              (__m512i) _mm512_cvtne2ps_pbh (load_head (b, d),
                  load_head (a, d))));
      if (m1)
        _mm512_storeu_si512 (dst + 16, _mm512_permutexvar_epi16 (inter,
                (__m512i) _mm512_cvtne2ps_pbh (load_tail (b + 16, d),
                    load_tail (a + 16, d))));
    }
  }
}

/* The accumulators of an S tile start as the bias. */
EHAT_T_F32 EHAT_INLINE void
qk_init (__m512 acc[ARB][3], int nv, int rows, int j0, const AttnJob *j,
    int i0, const float *bias)
{
  if (j->toeplitz) {
    /* per vector: the keys' first row run, and the next row's when the
     * vector straddles two rows of keys */
    int off[3], off2[3];
    __mmask16 m1[3], m2[3];
#pragma GCC unroll 3
    for (int v = 0; v < 3; v++) {
      off[v] = j->voff[j0 / 16 + v];
      off2[v] = j->voff2[j0 / 16 + v];
      m1[v] = j->vm1[j0 / 16 + v];
      m2[v] = j->vm2[j0 / 16 + v];
    }
#pragma GCC unroll 8
    for (int r = 0; r < ARB; r++) {
      const float *e = bias + j->qa[i0 + MIN (r, rows - 1)];
#pragma GCC unroll 3
      for (int v = 0; v < 3; v++) {
        if (v < nv) {
          __m512 x = _mm512_maskz_loadu_ps (m1[v], e + off[v]);
          if (m2[v])
            x = _mm512_mask_loadu_ps (x, m2[v], e + off2[v]);
          acc[r][v] = x;
        } else {
          acc[r][v] = _mm512_setzero_ps ();
        }
      }
    }
    return;
  }
#pragma GCC unroll 8
  for (int r = 0; r < ARB; r++) {
    const float *b = bias + (gsize) (i0 + MIN (r, rows - 1)) * j->nk + j0;
#pragma GCC unroll 3
    for (int v = 0; v < 3; v++)
      acc[r][v] = v < nv ? _mm512_maskz_loadu_ps (lanes (j->nk - j0 - 16 * v),
          b + 16 * v) : _mm512_setzero_ps ();
  }
}

/* S tile epilogue: −100 where the key's shift region differs from the
 * query's, the running row maxima over the valid keys, the store. */
EHAT_T_F32 EHAT_INLINE void
qk_store (__m512 acc[ARB][3], int nv, int rows, int j0, const AttnJob *j,
    Fast *f, int i0, float *S)
{
  /* locals: the vector stores below may alias anything */
  const gboolean mask = f->mask;
  const gint8 *reg = f->reg;
  const int nkp = f->nkp;
  float (*rmax)[16] = f->rmax;
  __mmask16 valid[3];
  __m512i rk[3];

#pragma GCC unroll 3
  for (int v = 0; v < 3; v++) {
    valid[v] = lanes (j->nk - j0 - 16 * v);
    rk[v] = mask ? _mm512_cvtepi8_epi32 (_mm_loadu_si128 ((const __m128i *)
            (reg + j0 + 16 * v))) : _mm512_setzero_si512 ();
  }
#pragma GCC unroll 8
  for (int r = 0; r < ARB; r++) {
    if (r >= rows)
      break;
    __m512i rq = _mm512_set1_epi32 (reg[i0 + r]);
    __m512 mx = _mm512_loadu_ps (rmax[r]);
    float *sr = S + (gsize) r * nkp + j0;
#pragma GCC unroll 3
    for (int v = 0; v < nv; v++) {
      __m512 x = acc[r][v];
      if (mask)
        x = _mm512_mask_add_ps (x, _mm512_cmpneq_epi32_mask (rk[v], rq), x,
            _mm512_set1_ps ((float) (-100.0 * LOG2E)));
      mx = _mm512_mask_max_ps (mx, valid[v], mx, x);
      _mm512_storeu_ps (sr + 16 * v, x);
    }
    _mm512_storeu_ps (rmax[r], mx);
  }
}

EHAT_T_F32 EHAT_INLINE void
qk_f32 (int nv, const AttnJob *j, Fast *f, int i0, int rows, int j0,
    const float *bias, float *S)
{
  __m512 acc[ARB][3];
  int d = j->d, nkp = f->nkp;
  const float *qr[ARB], *kr = f->kT + j0;

#pragma GCC unroll 8
  for (int r = 0; r < ARB; r++)
    qr[r] = f->q + (gsize) (i0 + MIN (r, rows - 1)) * d;
  qk_init (acc, nv, rows, j0, j, i0, bias);
  for (int e = 0; e < d; e++, kr += nkp) {
    __m512 b[3];
#pragma GCC unroll 3
    for (int v = 0; v < nv; v++)
      b[v] = _mm512_loadu_ps (kr + 16 * v);
#pragma GCC unroll 8
    for (int r = 0; r < ARB; r++) {
      __m512 a = _mm512_set1_ps (qr[r][e]);
#pragma GCC unroll 3
      for (int v = 0; v < nv; v++)
        acc[r][v] = _mm512_fmadd_ps (a, b[v], acc[r][v]);
    }
  }
  qk_store (acc, nv, rows, j0, j, f, i0, S);
}

EHAT_T_BF16 EHAT_INLINE void
qk_bf16 (int nv, const AttnJob *j, Fast *f, int i0, int rows, int j0,
    const float *bias, float *S)
{
  __m512 acc[ARB][3];
  int np = f->dpairs, nkp = f->nkp;
  const guint32 *qr[ARB], *kr = f->kw + j0;

#pragma GCC unroll 8
  for (int r = 0; r < ARB; r++)
    qr[r] = f->qw + (gsize) (i0 + MIN (r, rows - 1)) * np;
  qk_init (acc, nv, rows, j0, j, i0, bias);
  for (int p = 0; p < np; p++, kr += nkp) {
    __m512bh b[3];
#pragma GCC unroll 3
    for (int v = 0; v < nv; v++)
      b[v] = (__m512bh) _mm512_loadu_si512 (kr + 16 * v);
#pragma GCC unroll 8
    for (int r = 0; r < ARB; r++) {
#pragma GCC unroll 3
      for (int v = 0; v < nv; v++)
        acc[r][v] = ehat_dpbf16_bcast (acc[r][v], b[v], qr[r] + p);
    }
  }
  qk_store (acc, nv, rows, j0, j, f, i0, S);
}

EHAT_T_F32 static void
scores_f32 (const AttnJob *j, Fast *f, int i0, int rows,
    const float *bias, float *S)
{
  for (int r = 0; r < ARB; r++)
    _mm512_storeu_ps (f->rmax[r], _mm512_set1_ps (-G_MAXFLOAT));
  for (int j0 = 0, nv; j0 < f->nkp; j0 += 16 * nv) {
    nv = ehat_tile_width (f->nkp, j0) / 16;
    if (nv == 3)
      qk_f32 (3, j, f, i0, rows, j0, bias, S);
    else if (nv == 2)
      qk_f32 (2, j, f, i0, rows, j0, bias, S);
    else
      qk_f32 (1, j, f, i0, rows, j0, bias, S);
  }
}

EHAT_T_BF16 static void
scores_bf16 (const AttnJob *j, Fast *f, int i0, int rows,
    const float *bias, float *S)
{
  for (int r = 0; r < ARB; r++)
    _mm512_storeu_ps (f->rmax[r], _mm512_set1_ps (-G_MAXFLOAT));
  for (int j0 = 0, nv; j0 < f->nkp; j0 += 16 * nv) {
    nv = ehat_tile_width (f->nkp, j0) / 16;
    if (nv == 3)
      qk_bf16 (3, j, f, i0, rows, j0, bias, S);
    else if (nv == 2)
      qk_bf16 (2, j, f, i0, rows, j0, bias, S);
    else
      qk_bf16 (1, j, f, i0, rows, j0, bias, S);
  }
}

/* Unnormalised softmax of each score row over the nk keys: exp(s − max)
 * back into S (fp32) or into P (bf16, keys past nk zero); 1/Σ in inv. */
EHAT_T_BF16 static void
softmax_bf16 (Fast *f, int nk, int rows, float *inv)
{
  for (int r = 0; r < rows; r++) {
    float *s = f->S + (gsize) r * f->nkp;
    guint16 *p = f->P + (gsize) r * f->nkp;
    __m512 vsum = _mm512_setzero_ps ();
    __m512 mx = _mm512_set1_ps (_mm512_reduce_max_ps (_mm512_loadu_ps (f->rmax[r])));
    for (int j0 = 0; j0 < f->nkp; j0 += 16) {
      __m512 x = _mm512_maskz_mov_ps (lanes (nk - j0),
          exp2_16 (_mm512_sub_ps (_mm512_loadu_ps (s + j0), mx), TRUE));
      vsum = _mm512_add_ps (vsum, x);
      _mm256_storeu_si256 ((__m256i *) (p + j0),
          (__m256i) _mm512_cvtneps_pbh (x));
    }
    inv[r] = 1.0f / _mm512_reduce_add_ps (vsum);
  }
}

EHAT_T_F32 static void
softmax_f32 (Fast *f, int nk, int rows, float *inv)
{
  for (int r = 0; r < rows; r++) {
    float *s = f->S + (gsize) r * f->nkp;
    __m512 vsum = _mm512_setzero_ps ();
    __m512 mx = _mm512_set1_ps (_mm512_reduce_max_ps (_mm512_loadu_ps (f->rmax[r])));
    for (int j0 = 0; j0 < nk; j0 += 16) {
      __mmask16 m = lanes (nk - j0);
      __m512 x = _mm512_maskz_mov_ps (m,
          exp2_16 (_mm512_sub_ps (_mm512_loadu_ps (s + j0), mx), FALSE));
      vsum = _mm512_add_ps (vsum, x);
      _mm512_mask_storeu_ps (s + j0, m, x);
    }
    inv[r] = 1.0f / _mm512_reduce_add_ps (vsum);
  }
}

/* O rows = P·v / Σ into the output rows of head hd.  v2: width of the
 * second vector of output columns (0, 8: ymm, 16: zmm). */
EHAT_T_F32 EHAT_INLINE void
pv_store (__m512 a0[ARB], __m512 a1z[ARB], __m256 a1y[ARB], int v2,
    const AttnJob *j, const Fast *f, int i0, int rows, const float *inv,
    int hd)
{
  __mmask16 m0 = lanes (j->d), m1 = lanes (j->d - 16);
#pragma GCC unroll 8
  for (int r = 0; r < ARB; r++) {
    if (r >= rows)
      break;
    float *o = j->out + f->qpos[i0 + r] * (gsize) j->c + (gsize) hd * j->d;
    __m512 sc = _mm512_set1_ps (inv[r]);
    _mm512_mask_storeu_ps (o, m0, _mm512_mul_ps (a0[r], sc));
    if (v2 == 16)
      _mm512_mask_storeu_ps (o + 16, m1, _mm512_mul_ps (a1z[r], sc));
    else if (v2 == 8)
      _mm256_mask_storeu_ps (o + 16, (__mmask8) m1, _mm256_mul_ps (a1y[r],
              _mm512_castps512_ps256 (sc)));
  }
}

EHAT_T_F32 EHAT_INLINE void
pv_f32 (int v2, const AttnJob *j, const Fast *f, int i0, int rows,
    const float *inv, int hd)
{
  __m512 a0[ARB], a1z[ARB];
  __m256 a1y[ARB];
  const float *pr[ARB];
  int dv = f->dv;

#pragma GCC unroll 8
  for (int r = 0; r < ARB; r++) {
    pr[r] = f->S + (gsize) MIN (r, rows - 1) * f->nkp;
    a0[r] = a1z[r] = _mm512_setzero_ps ();
    a1y[r] = _mm256_setzero_ps ();
  }
  for (int t = 0; t < j->nk; t++) {
    const float *vr = f->v + (gsize) t * dv;
    __m512 v0 = _mm512_loadu_ps (vr), v1z = _mm512_setzero_ps ();
    __m256 v1y = _mm256_setzero_ps ();
    if (v2 == 16)
      v1z = _mm512_loadu_ps (vr + 16);
    else if (v2 == 8)
      v1y = _mm256_loadu_ps (vr + 16);
#pragma GCC unroll 8
    for (int r = 0; r < ARB; r++) {
      __m512 p = _mm512_set1_ps (pr[r][t]);
      a0[r] = _mm512_fmadd_ps (p, v0, a0[r]);
      if (v2 == 16)
        a1z[r] = _mm512_fmadd_ps (p, v1z, a1z[r]);
      else if (v2 == 8)
        a1y[r] = _mm256_fmadd_ps (_mm512_castps512_ps256 (p), v1y, a1y[r]);
    }
  }
  pv_store (a0, a1z, a1y, v2, j, f, i0, rows, inv, hd);
}

EHAT_T_BF16 EHAT_INLINE void
pv_bf16 (int v2, const AttnJob *j, const Fast *f, int i0, int rows,
    const float *inv, int hd)
{
  __m512 a0[ARB], a1z[ARB];
  __m256 a1y[ARB];
  const guint32 *pr[ARB];
  int dv = f->dv;

#pragma GCC unroll 8
  for (int r = 0; r < ARB; r++) {
    pr[r] = (const guint32 *) (f->P + (gsize) MIN (r, rows - 1) * f->nkp);
    a0[r] = a1z[r] = _mm512_setzero_ps ();
    a1y[r] = _mm256_setzero_ps ();
  }
  for (int u = 0; u < (j->nk + 1) / 2; u++) {
    const guint32 *vr = f->vw + (gsize) u * dv;
    __m512bh v0 = (__m512bh) _mm512_loadu_si512 (vr), v1z = v0;
    __m256bh v1y = (__m256bh) _mm256_setzero_si256 ();
    if (v2 == 16)
      v1z = (__m512bh) _mm512_loadu_si512 (vr + 16);
    else if (v2 == 8)
      v1y = (__m256bh) _mm256_loadu_si256 ((const __m256i *) (vr + 16));
#pragma GCC unroll 8
    for (int r = 0; r < ARB; r++) {
      a0[r] = ehat_dpbf16_bcast (a0[r], v0, pr[r] + u);
      if (v2 == 16)
        a1z[r] = ehat_dpbf16_bcast (a1z[r], v1z, pr[r] + u);
      else if (v2 == 8)
        a1y[r] = _mm256_dpbf16_ps (a1y[r], (__m256bh)
            _mm256_set1_epi32 ((int) pr[r][u]), v1y);
    }
  }
  pv_store (a0, a1z, a1y, v2, j, f, i0, rows, inv, hd);
}

EHAT_T_F32 static void
head_f32 (const AttnJob *j, Fast *f, int hd, int slot, const float *bias)
{
  float inv[ARB];
  int v2 = j->d <= 16 ? 0 : j->d <= 24 ? 8 : 16;

  f->q = f->q_all + slot * f->qsz;
  f->kT = f->kT_all + slot * f->ksz;
  f->v = f->v_all + slot * f->vsz;
  for (int i0 = 0; i0 < j->nq; i0 += ARB) {
    int rows = MIN (ARB, j->nq - i0);
    scores_f32 (j, f, i0, rows, bias, f->S);
    softmax_f32 (f, j->nk, rows, inv);
    if (v2 == 0)
      pv_f32 (0, j, f, i0, rows, inv, hd);
    else if (v2 == 8)
      pv_f32 (8, j, f, i0, rows, inv, hd);
    else
      pv_f32 (16, j, f, i0, rows, inv, hd);
  }
}

EHAT_T_BF16 static void
head_bf16 (const AttnJob *j, Fast *f, int hd, int slot, const float *bias)
{
  float inv[ARB];
  int v2 = j->d <= 16 ? 0 : j->d <= 24 ? 8 : 16;

  f->qw = f->qw_all + slot * f->qsz;
  f->kw = f->kw_all + slot * f->ksz;
  f->vw = f->vw_all + slot * f->vsz;
  for (int i0 = 0; i0 < j->nq; i0 += ARB) {
    int rows = MIN (ARB, j->nq - i0);
    scores_bf16 (j, f, i0, rows, bias, f->S);
    softmax_bf16 (f, j->nk, rows, inv);
    if (v2 == 0)
      pv_bf16 (0, j, f, i0, rows, inv, hd);
    else if (v2 == 8)
      pv_bf16 (8, j, f, i0, rows, inv, hd);
    else
      pv_bf16 (16, j, f, i0, rows, inv, hd);
  }
}

static void
attn_fast_tasks (gpointer data, gsize begin, gsize end, int thread)
{
  const AttnJob *j = data;
  Fast *f = &j->fast_scratch[thread];
  int groups = j->heads / j->task_heads;

  for (gsize task = begin; task < end; task++) {
    int h0 = (task % groups) * j->task_heads;

    window_positions (j, task / groups, f->qpos, f->kpos, f->reg);
    f->mask = FALSE;
    for (int t = 1; j->shift && t < j->nq; t++)
      f->mask |= f->reg[t] != f->reg[0];
    if (j->bf16)
      gather_bf16 (j, f, h0, j->task_heads);
    else if (j->vw == 8)
      ehat_cpu_attn_gather_avx2 (j, f, h0, j->task_heads);
    else
      gather_f32 (j, f, h0, j->task_heads);
    for (int hd = h0; hd < h0 + j->task_heads; hd++) {
      const float *bias = j->toeplitz ? j->etab + (gsize) hd * j->elen
          : j->bias + (gsize) hd * j->nq * j->nk;
      if (j->bf16)
        head_bf16 (j, f, hd, hd - h0, bias);
      else if (j->vw == 8)
        ehat_cpu_attn_head_avx2 (j, f, hd, hd - h0, bias);
      else
        head_f32 (j, f, hd, hd - h0, bias);
    }
  }
}
#endif /* EHAT_X86_KERNELS */

/* Heads of a head dimension up to 32 run on the x86 kernels: 16 keys a
 * vector on AVX-512, 8 on AVX2 (the CPUs whose GEMMs are the AVX2 ones);
 * 0 where the portable kernel runs. */
static int
fast_width (EhatBackend *be, int d)
{
#ifdef EHAT_X86_KERNELS
  EhatCpuBackend *cpu = (EhatCpuBackend *) be;
  if (d > 32)
    return 0;
  if (cpu->own_f32)
    return 16;
  if (cpu->f32_kind == EHAT_GEMM_F32_AVX2)
    return 8;
#endif
  return 0;
}

#ifdef EHAT_X86_KERNELS
static void attn_fast_init (AttnJob *j, int n_threads);
static void attn_fast_clear (AttnJob *j, int n_threads);
static void attn_fast_tasks (gpointer data, gsize begin, gsize end,
    int thread);
#endif

static void
run_attention (EhatBackend *be, AttnJob *j, gsize n_images)
{
  EhatCpuBackend *cpu = (EhatCpuBackend *) be;
  gsize tasks = n_images * j->nwy * j->nwx * j->heads;

#ifdef EHAT_X86_KERNELS
  /* Heads of a head dimension up to 32 on the x86 kernels.  A task is
   * a window with all its heads (its qkv rows come from L3 once; going
   * head-major instead, to keep a head's bias in L2, measured slower), or
   * one head of it when windows are too few to keep the threads busy. */
  if (j->vw) {
    gsize windows = n_images * j->nwy * j->nwx;
    j->bf16 = cpu->bf16;
    j->task_heads = windows >= 4 * (gsize) cpu->n_threads ? j->heads : 1;
    attn_fast_init (j, cpu->n_threads);
    ehat_pool_parallel_for (cpu->pool, windows * (j->heads / j->task_heads),
        1, attn_fast_tasks, j);
    attn_fast_clear (j, cpu->n_threads);
    return;
  }
#endif
  j->scratch = g_new (Scratch, cpu->n_threads);
  for (int t = 0; t < cpu->n_threads; t++)
    scratch_init (&j->scratch[t], j->nq, j->nk, j->d, j->dp);
  ehat_pool_parallel_for (cpu->pool, tasks, 1, attn_tasks, j);
  for (int t = 0; t < cpu->n_threads; t++)
    scratch_clear (&j->scratch[t]);
  g_free (j->scratch);
}

/* The relative-position index of EHAT-SPEC.md §4 is Toeplitz along each
 * row of keys: for window attention idx = (yi − yj + ws − 1)(2ws − 1) +
 * (xi − xj + ws − 1), for OCAB (yj − yi + ws − wse + 1)·side + (xj − xi +
 * ws − wse + 1) modulo its length.  So the bias of a query against a row
 * of keys is a contiguous run of a per-head table — the table reversed
 * (window) or repeated twice (OCAB, for the modulo) — a few KiB that stay
 * in L1, where the dense [heads][queries][keys] expansion (1.5 MiB for
 * HAT-S's windows, 3.4 MiB for OCAB) streamed from L3 for every window.
 * Built only when the index the network passes is exactly that (checked
 * entry by entry); the dense table otherwise. */
static gboolean
toeplitz_bias (AttnJob *j, const float *table, const gint32 *index)
{
  int ws = j->ws, nq = j->nq, nk = j->nk, heads = j->heads, vw = j->vw;
  int kw = j->overlap ? j->wse : ws;
  int side = j->overlap ? ws + j->wse - 1 : 2 * ws - 1, len = side * side;
  int elen = j->overlap ? 2 * len : len;
  gint32 *qa;

  /* a vector of vw keys must span at most two rows of keys */
  for (int jj = 0; jj < nk; jj += vw)
    if (MIN (vw, nk - jj) - (kw - jj % kw) > kw)
      return FALSE;
  qa = g_new (gint32, nq);
  for (int i = 0; i < nq; i++) {
    int yi = i / ws, xi = i % ws;
    qa[i] = j->overlap ? len + (ws - j->wse + 1 - yi) * side - xi + ws
        - j->wse + 1 : (len - 1) - (yi + ws - 1) * side - xi - ws + 1;
  }
  /* (no divisions: this runs for every call) */
  for (int i = 0; i < nq; i++) {
    const gint32 *row = index + (gsize) i * nk;
    for (int yj = 0, jj = 0; jj < nk; yj++)
      for (int xj = 0; xj < kw && jj < nk; xj++, jj++) {
        gint64 k = (gint64) qa[i] + (gint64) yj * side + xj, want;
        if (j->overlap) {
          want = k - len;
          want += want < 0 ? len : 0;
        } else {
          want = len - 1 - k;
        }
        if (k < 0 || k >= elen || want < 0 || want >= len || want != row[jj]) {
          g_free (qa);
          return FALSE;
        }
      }
  }
  /* + 16: AVX2 loads whole vectors; lanes past the table are not used */
  j->etab = g_new0 (float, (gsize) heads * elen + 16);
  for (int hd = 0; hd < heads; hd++)
    for (int k = 0; k < elen; k++) {
      int t = j->overlap ? (k - len) % len : len - 1 - k;
      if (t < 0)
        t += len;
      j->etab[(gsize) hd * elen + k] = table[(gsize) t * heads + hd]
          * (float) LOG2E;
    }
  j->qa = qa;
  j->kw = kw;
  j->brow = side;
  j->elen = elen;
  j->toeplitz = TRUE;
  {
    int nvec = (nk + vw - 1) / vw + 3;
    j->voff = g_new0 (gint32, nvec);
    j->voff2 = g_new0 (gint32, nvec);
    j->vm1 = g_new0 (guint16, nvec);
    j->vm2 = g_new0 (guint16, nvec);
    for (int v = 0; v * vw < nk; v++) {
      int jj = vw * v, yj = jj / kw, xj = jj % kw;
      int run = MIN (vw, kw - xj), valid = MIN (vw, nk - jj);
      j->voff[v] = yj * side + xj;
      j->vm1[v] = (guint16) ((1u << MIN (run, valid)) - 1);
      if (run < valid) {
        j->vm2[v] = (guint16) (((1u << valid) - 1) & ~((1u << run) - 1));
        j->voff2[v] = (yj + 1) * side - run;
      }
    }
  }
  return TRUE;
}

static void
bias_clear (AttnJob *j)
{
  g_free (j->etab);
  g_free (j->qa);
  g_free (j->voff);
  g_free (j->voff2);
  g_free (j->vm1);
  g_free (j->vm2);
}

static void
set_bias (EhatBackend *be, AttnJob *j, const float *table,
    const gint32 *index)
{
  if (j->vw && toeplitz_bias (j, table, index))
    return;
  j->bias = expand_bias (be, table, index, j->heads, j->nq, j->nk,
      j->vw ? (float) LOG2E : 1.0f);
}

void
ehat_cpu_window_attention (EhatBackend *be, const float *qkv, int n, int h,
    int w, int c, int heads, int ws, int shift, const float *table,
    const gint32 *index, float *out)
{
  int d = c / heads, nq = ws * ws;
  AttnJob j = {
    .qkv = qkv, .out = out, .h = h, .w = w, .c = c, .heads = heads,
    .ws = ws, .wse = ws, .shift = shift, .d = d, .dp = round_up (d, JB),
    .nq = nq, .nk = nq, .nkp = round_up (nq, JB), .nwx = w / ws,
    .nwy = h / ws, .overlap = FALSE,
    .scale = (float) (1.0 / sqrt ((double) d)), .vw = fast_width (be, d),
  };

  set_bias (be, &j, table, index);
  run_attention (be, &j, n);
  bias_clear (&j);
}

void
ehat_cpu_overlap_attention (EhatBackend *be, const float *qkv, int n, int h,
    int w, int c, int heads, int ws, int wse, const float *table,
    const gint32 *index, float *out)
{
  int d = c / heads, nq = ws * ws, nk = wse * wse;
  AttnJob j = {
    .qkv = qkv, .out = out, .h = h, .w = w, .c = c, .heads = heads,
    .ws = ws, .wse = wse, .shift = 0, .d = d, .dp = round_up (d, JB),
    .nq = nq, .nk = nk, .nkp = round_up (nk, JB), .nwx = w / ws,
    .nwy = h / ws, .overlap = TRUE,
    .scale = (float) (1.0 / sqrt ((double) d)), .vw = fast_width (be, d),
  };

  set_bias (be, &j, table, index);
  run_attention (be, &j, n);
  bias_clear (&j);
}
