/* GEMM micro-kernels of the CPU backend (fp32 with AVX-512F, bf16 with
 * AVX512-BF16), weights pre-packed once into column panels.
 *
 * C[m×n] = epilogue(A[m×k] · B[k×n]).  B (the weights) is packed into
 * panels of NR = 48 columns (three 16-float vectors; the last panel may be
 * 16 or 32 wide, columns past n are zero):
 *   fp32: panel[k][w] floats;
 *   bf16: panel[k/2][w][2] — the two bf16 of rows 2p and 2p+1 of a column
 *         side by side, which is the pair vdpbf16ps multiplies with the
 *         matching pair of A (rows of B past k are zero, k rounded up to
 *         even).
 * A (activations) is read row-major as it is: each of MR = 8 rows has its
 * k-th value (fp32) or k-pair (bf16, one 32-bit word) broadcast against
 * the panel's vectors, 24 accumulators in registers.  bf16 A rows are
 * converted from fp32 in blocks of rows that stay in L2 (the "packing" of
 * A is just that conversion).
 *
 * The epilogue (bias, activation with the exact-erf GELU, +β·C, +α·res)
 * runs on the accumulators before the one store of each tile.
 *
 * The kernels are compiled with target attributes, so the library builds
 * for the baseline x86-64 and uses them only where the CPU has them
 * (ehat_cpu_has_avx512 / ehat_cpu_has_bf16); elsewhere B stays a plain
 * row-major matrix for OpenBLAS. */
#include "ehat-cpu.h"

#include <cblas.h>
#include <stdlib.h>

#ifdef EHAT_X86_KERNELS
#define EHAT_GEMM_X86 1
#include <immintrin.h>
#endif

#define NR 48
#define MR 8

/* What the hardware has (the OS saving the AVX-512 state included, which
 * libgcc's check covers), probed once. */
static int hw_avx512 = -1, hw_bf16 = -1, hw_avx2 = -1;

static void
probe (void)
{
#ifdef EHAT_GEMM_X86
  if (hw_avx512 < 0) {
    __builtin_cpu_init ();
    hw_bf16 = __builtin_cpu_supports ("avx512bf16");
    hw_avx512 = __builtin_cpu_supports ("avx512f")
        && __builtin_cpu_supports ("avx512bw")
        && __builtin_cpu_supports ("avx512dq")
        && __builtin_cpu_supports ("avx512vl")
        && __builtin_cpu_supports ("fma");
    hw_bf16 = hw_bf16 && hw_avx512;
    hw_avx2 = __builtin_cpu_supports ("avx2")
        && __builtin_cpu_supports ("fma");
  }
#else
  hw_avx512 = hw_bf16 = hw_avx2 = 0;
#endif
}

/* EHAT_CPU_NO_AVX512 / EHAT_CPU_NO_AVX2 / EHAT_CPU_NO_BF16 (read when a
 * backend is created) let the tests run the other paths on a CPU that has
 * these. */
gboolean
ehat_cpu_has_avx512 (void)
{
  probe ();
  return hw_avx512 && !g_getenv ("EHAT_CPU_NO_AVX512");
}

gboolean
ehat_cpu_has_avx2 (void)
{
  probe ();
  return hw_avx2 && !g_getenv ("EHAT_CPU_NO_AVX2");
}

gboolean
ehat_cpu_has_bf16 (void)
{
  probe ();
  return hw_bf16 && ehat_cpu_has_avx512 () && !g_getenv ("EHAT_CPU_NO_BF16");
}

static inline int
round_up (int v, int m)
{
  return (v + m - 1) / m * m;
}

/* Round to nearest even, like vcvtneps2bf16 (NaN stays NaN). */
static inline guint16
f32_to_bf16 (float f)
{
  guint32 u;
  memcpy (&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return (guint16) ((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (guint16) (u >> 16);
}

float
ehat_bf16_to_f32 (guint16 h)
{
  guint32 u = (guint32) h << 16;
  float f;
  memcpy (&f, &u, 4);
  return f;
}

/* Panels of B are ehat_tile_width () columns wide, packed one after
 * another (panel j0 at j0·kp). */
G_STATIC_ASSERT (NR == 48);

void
ehat_gemm_layout (EhatGemmB *b, EhatGemmKind kind, int k, int n)
{
  b->kind = kind;
  b->k = k;
  b->n = n;
  b->kp = kind == EHAT_GEMM_BF16 ? round_up (k, 2) : k;
  b->np = kind == EHAT_GEMM_BLAS ? n : round_up (n, 16);
  b->data = NULL;
}

gsize
ehat_gemm_data_bytes (const EhatGemmB *b)
{
  if (ehat_gemm_is_narrow (b))
    return (gsize) b->n * b->conv_k * b->conv_k * b->cinp
        * (b->kind == EHAT_GEMM_NARROW_BF16 ? 2 : 4);
  return (gsize) b->kp * b->np * (b->kind == EHAT_GEMM_BF16 ? 2 : 4);
}

void
ehat_gemm_layout_narrow (EhatGemmB *b, EhatGemmKind kind, int k, int cin,
    int cout)
{
  ehat_gemm_layout (b, kind, k * k * cin, cout);
  b->conv_k = k;
  b->cin = cin;
  /* fp32: vectors of 16 (AVX2: 2 × 8) channels; bf16: of 16 channel
   * pairs */
  b->cinp = round_up (cin, kind == EHAT_GEMM_NARROW_BF16 ? 32 : 16);
}

int
ehat_narrow_x_stride (const EhatGemmB *b)
{
  return b->kind == EHAT_GEMM_NARROW_BF16 ? round_up (b->cin, 2) : b->cin;
}

void
ehat_gemm_pack_narrow (EhatGemmB *b, void *data, const float *w)
{
  int kk = b->conv_k * b->conv_k;

  b->data = data;
  memset (data, 0, ehat_gemm_data_bytes (b));
  for (int n = 0; n < b->n; n++)
    for (int ci = 0; ci < b->cin; ci++)
      for (int t = 0; t < kk; t++) {
        float v = w[((gsize) n * b->cin + ci) * kk + t];
        gsize at = ((gsize) n * kk + t) * b->cinp + ci;
        if (b->kind == EHAT_GEMM_NARROW_BF16)
          ((guint16 *) data)[at] = f32_to_bf16 (v);
        else
          ((float *) data)[at] = v;
      }
}

void
ehat_gemm_pack (EhatGemmB *b, void *data, const float *src, gsize sk,
    gsize sn)
{
  b->data = data;
  if (b->kind == EHAT_GEMM_BLAS) {
    float *d = data;
    for (int i = 0; i < b->k; i++)
      for (int j = 0; j < b->n; j++)
        d[(gsize) i * b->n + j] = src[i * sk + j * sn];
    return;
  }
  for (int j0 = 0, w; j0 < b->np; j0 += w) {
    w = ehat_tile_width (b->np, j0);
    if (b->kind == EHAT_GEMM_F32 || b->kind == EHAT_GEMM_F32_AVX2) {
      float *d = (float *) data + (gsize) j0 * b->kp;
      for (int i = 0; i < b->kp; i++)
        for (int jj = 0; jj < w; jj++) {
          int j = j0 + jj;
          d[(gsize) i * w + jj] = (j < b->n) ? src[i * sk + j * sn] : 0.0f;
        }
    } else {
      guint16 *d = (guint16 *) data + (gsize) j0 * b->kp;
      for (int i = 0; i < b->kp; i++)
        for (int jj = 0; jj < w; jj++) {
          int j = j0 + jj;
          float v = (j < b->n && i < b->k) ? src[i * sk + j * sn] : 0.0f;
          d[((gsize) (i / 2) * w + jj) * 2 + (i % 2)] = f32_to_bf16 (v);
        }
    }
  }
}

/* e with its row-major pointers (res, acc) advanced by off elements: the
 * epilogue of a block or tile at that offset of C. */
static inline EhatGemmEpi
epi_at (const EhatGemmEpi *e, gsize off)
{
  EhatGemmEpi r = *e;
  r.res = e->res ? e->res + off : NULL;
  r.acc = e->acc ? e->acc + off : NULL;
  return r;
}

/* ---- BLAS path (no AVX-512): sgemm, then the epilogue over the rows ---- */

static void
gemm_blas (const EhatGemmB *b, const float *a, gsize lda, gsize m, float *c,
    gsize ldc, const EhatGemmEpi *e)
{
  float beta = e->beta, alpha = e->alpha;
  const float *res = e->res;

  /* In-place residual (act NONE): through sgemm's beta. */
  if (res == c) {
    beta += alpha;
    res = NULL;
  }
  g_assert (beta == 0.0f || e->act == EHAT_ACT_NONE);
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, (int) m, b->n,
      b->k, 1.0f, a, (int) lda, b->data, b->n, beta, c, (int) ldc);
  for (gsize r = 0; r < m; r++) {
    float *cr = c + r * ldc;
    const float *rr = res ? res + r * ldc : NULL;
    float *ar = e->acc ? e->acc + r * ldc : NULL;
    if (e->bias) {
#pragma omp simd
      for (int j = 0; j < b->n; j++)
        cr[j] += e->bias[j];
    }
    ehat_activate (cr, b->n, e->act);
    if (rr) {
#pragma omp simd
      for (int j = 0; j < b->n; j++)
        cr[j] += alpha * rr[j];
    }
    if (ar) {
#pragma omp simd
      for (int j = 0; j < b->n; j++)
        ar[j] += e->acc_w * cr[j];
    }
  }
}

#ifdef EHAT_GEMM_X86

#define T_F32 EHAT_T_F32
#define T_BF16 EHAT_T_BF16
#define INLINE EHAT_INLINE

/* The exact (erf) GELU of ehat-cpu.h on 16 lanes, same polynomial. */
T_F32 INLINE __m512
gelu16 (__m512 x)
{
  __m512 z = _mm512_mul_ps (x, _mm512_set1_ps (0.70710678118654752f));
  __m512 x2, p, q;

  z = _mm512_min_ps (_mm512_max_ps (z, _mm512_set1_ps (-4.0f)),
      _mm512_set1_ps (4.0f));
  x2 = _mm512_mul_ps (z, z);
  p = _mm512_set1_ps (-2.72614225801306e-10f);
  p = _mm512_fmadd_ps (p, x2, _mm512_set1_ps (2.77068142495902e-08f));
  p = _mm512_fmadd_ps (p, x2, _mm512_set1_ps (-2.10102402082508e-06f));
  p = _mm512_fmadd_ps (p, x2, _mm512_set1_ps (-5.69250639462346e-05f));
  p = _mm512_fmadd_ps (p, x2, _mm512_set1_ps (-7.34990630326855e-04f));
  p = _mm512_fmadd_ps (p, x2, _mm512_set1_ps (-2.95459980854025e-03f));
  p = _mm512_fmadd_ps (p, x2, _mm512_set1_ps (-1.60960333262415e-02f));
  p = _mm512_mul_ps (p, z);
  q = _mm512_set1_ps (-1.45660718464996e-05f);
  q = _mm512_fmadd_ps (q, x2, _mm512_set1_ps (-2.13374055278905e-04f));
  q = _mm512_fmadd_ps (q, x2, _mm512_set1_ps (-1.68282697438203e-03f));
  q = _mm512_fmadd_ps (q, x2, _mm512_set1_ps (-7.37332916720468e-03f));
  q = _mm512_fmadd_ps (q, x2, _mm512_set1_ps (-1.42647390514189e-02f));
  return _mm512_mul_ps (_mm512_mul_ps (_mm512_set1_ps (0.5f), x),
      _mm512_add_ps (_mm512_set1_ps (1.0f), _mm512_div_ps (p, q)));
}

/* The epilogues' activation on 16 lanes. */
T_F32 INLINE __m512
act16 (__m512 x, EhatAct act)
{
  switch (act) {
    case EHAT_ACT_GELU:
      return gelu16 (x);
    case EHAT_ACT_RELU:
      return _mm512_max_ps (x, _mm512_setzero_ps ());
    case EHAT_ACT_LRELU:
      return _mm512_mask_mul_ps (x, _mm512_cmp_ps_mask (x,
              _mm512_setzero_ps (), _CMP_LT_OQ), x, _mm512_set1_ps (0.01f));
    default:
      return x;
  }
}

static inline __mmask16
col_mask (int cols, int v)
{
  int left = cols - v * 16;
  return left >= 16 ? 0xffff : left <= 0 ? 0 : (__mmask16) ((1u << left) - 1);
}

static inline __mmask16
lanes16 (int n)
{
  return n >= 16 ? 0xffff : n <= 0 ? 0 : (__mmask16) ((1u << n) - 1);
}

/* The epilogue and the store of an MR×(16·nv) tile; rows and cols are the
 * valid part. */
T_F32 INLINE void
store_tile (__m512 acc[MR][3], int nv, int rows, int cols, float *c,
    gsize ldc, const EhatGemmEpi *e, int j0)
{
  __m512 bias[3];
  __mmask16 mk[3];

  for (int v = 0; v < nv; v++) {
    mk[v] = col_mask (cols, v);
    bias[v] = e->bias ? _mm512_maskz_loadu_ps (mk[v], e->bias + j0 + v * 16)
        : _mm512_setzero_ps ();
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; r++) {
    if (r >= rows)
      break;
    float *cr = c + (gsize) r * ldc;
    const float *rr = e->res ? e->res + (gsize) r * ldc : NULL;
#pragma GCC unroll 3
    for (int v = 0; v < nv; v++) {
      __m512 x = act16 (_mm512_add_ps (acc[r][v], bias[v]), e->act);
      if (e->beta != 0.0f)
        x = _mm512_fmadd_ps (_mm512_set1_ps (e->beta),
            _mm512_maskz_loadu_ps (mk[v], cr + v * 16), x);
      if (rr)
        x = _mm512_fmadd_ps (_mm512_set1_ps (e->alpha),
            _mm512_maskz_loadu_ps (mk[v], rr + v * 16), x);
      _mm512_mask_storeu_ps (cr + v * 16, mk[v], x);
      if (e->acc) {
        float *ar = e->acc + (gsize) r * ldc + v * 16;
        _mm512_mask_storeu_ps (ar, mk[v], _mm512_fmadd_ps (_mm512_set1_ps
                (e->acc_w), x, _mm512_maskz_loadu_ps (mk[v], ar)));
      }
    }
  }
}

/* ---- fp32 ---- */

T_F32 INLINE void
tile_f32 (int nv, const float *a, gsize lda, int rows, const float *bp,
    int k, float *c, gsize ldc, int cols, const EhatGemmEpi *e, int j0)
{
  __m512 acc[MR][3];
  const float *ar[MR];
  int w = nv * 16;

#pragma GCC unroll 8
  for (int r = 0; r < MR; r++) {
    /* rows past the valid ones recompute the last row (never stored) */
    ar[r] = a + (gsize) MIN (r, rows - 1) * lda;
#pragma GCC unroll 3
    for (int v = 0; v < 3; v++)
      acc[r][v] = _mm512_setzero_ps ();
  }
  for (int i = 0; i < k; i++) {
    __m512 bv[3];
#pragma GCC unroll 3
    for (int v = 0; v < nv; v++)
      bv[v] = _mm512_loadu_ps (bp + (gsize) i * w + v * 16);
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
      __m512 av = _mm512_set1_ps (ar[r][i]);
#pragma GCC unroll 3
      for (int v = 0; v < nv; v++)
        acc[r][v] = _mm512_fmadd_ps (av, bv[v], acc[r][v]);
    }
  }
  store_tile (acc, nv, rows, cols, c, ldc, e, j0);
}

T_F32 static void
tile_f32_3 (const float *a, gsize lda, int rows, const float *bp, int k,
    float *c, gsize ldc, int cols, const EhatGemmEpi *e, int j0)
{
  tile_f32 (3, a, lda, rows, bp, k, c, ldc, cols, e, j0);
}

T_F32 static void
tile_f32_2 (const float *a, gsize lda, int rows, const float *bp, int k,
    float *c, gsize ldc, int cols, const EhatGemmEpi *e, int j0)
{
  tile_f32 (2, a, lda, rows, bp, k, c, ldc, cols, e, j0);
}

T_F32 static void
tile_f32_1 (const float *a, gsize lda, int rows, const float *bp, int k,
    float *c, gsize ldc, int cols, const EhatGemmEpi *e, int j0)
{
  tile_f32 (1, a, lda, rows, bp, k, c, ldc, cols, e, j0);
}

/* Rows [0, m) of A against every panel: panel outer (it stays in L1 while
 * the row tiles pass), row tiles inner. */
static void
gemm_f32_block (const EhatGemmB *b, const float *a, gsize lda, int m,
    float *c, gsize ldc, const EhatGemmEpi *e)
{
  for (int j0 = 0, w; j0 < b->n; j0 += w) {
    int cols;
    w = ehat_tile_width (b->np, j0);
    cols = MIN (w, b->n - j0);
    const float *bp = (const float *) b->data + (gsize) j0 * b->kp;
    EhatGemmEpi ej;
    for (int i0 = 0; i0 < m; i0 += MR) {
      int rows = MIN (MR, m - i0);
      const float *ai = a + (gsize) i0 * lda;
      float *ci = c + (gsize) i0 * ldc + j0;
      ej = epi_at (e, (gsize) i0 * ldc + j0);
      if (w == 48)
        tile_f32_3 (ai, lda, rows, bp, b->k, ci, ldc, cols, &ej, j0);
      else if (w == 32)
        tile_f32_2 (ai, lda, rows, bp, b->k, ci, ldc, cols, &ej, j0);
      else
        tile_f32_1 (ai, lda, rows, bp, b->k, ci, ldc, cols, &ej, j0);
    }
  }
}

/* ---- fp32 on AVX2 + FMA (CPUs without AVX-512) ----
 * The same panels, cut into blocks of 16 columns (two ymm); tiles of
 * MR2 = 6 rows × 2 vectors: 12 accumulators beside the two B vectors and
 * the broadcast, in AVX2's 16 registers. */

#define MR2 6
#define T_AVX2 EHAT_T_AVX2

#define mask8 ehat_mask8

/* ehat-cpu.h's GELU on a ymm: one EhatVec, or two where it has 4 lanes
 * (builds without clones, e.g. clang's) */
T_AVX2 INLINE __m256
gelu8 (__m256 x)
{
#if EHAT_VL == 8
  return (__m256) ehat_vec_gelu ((EhatVec) x);
#else
  __m128 lo = (__m128) ehat_vec_gelu ((EhatVec) _mm256_castps256_ps128 (x));
  __m128 hi = (__m128) ehat_vec_gelu ((EhatVec) _mm256_extractf128_ps (x,
          1));
  return _mm256_set_m128 (hi, lo);
#endif
}

/* The epilogue of store_tile on 8 lanes. */
T_AVX2 INLINE __m256
act8 (__m256 x, EhatAct act)
{
  switch (act) {
    case EHAT_ACT_GELU:
      return gelu8 (x);
    case EHAT_ACT_RELU:
      return _mm256_max_ps (x, _mm256_setzero_ps ());
    case EHAT_ACT_LRELU:
      return _mm256_blendv_ps (x, _mm256_mul_ps (x, _mm256_set1_ps (0.01f)),
          _mm256_cmp_ps (x, _mm256_setzero_ps (), _CMP_LT_OQ));
    default:
      return x;
  }
}

/* 8 floats at p, or lanes [0, n) (vmaskmovps, slow on AMD: tails only) */
T_AVX2 INLINE __m256
load8_n (const float *p, int n, __m256i mk)
{
  return n >= 8 ? _mm256_loadu_ps (p) : _mm256_maskload_ps (p, mk);
}

T_AVX2 INLINE void
store8_n (float *p, __m256 x, int n, __m256i mk)
{
  if (n >= 8)
    _mm256_storeu_ps (p, x);
  else
    _mm256_maskstore_ps (p, mk, x);
}

T_AVX2 INLINE void
store_tile_avx2 (__m256 acc[MR2][2], int nv, int rows, int cols, float *c,
    gsize ldc, const EhatGemmEpi *e, int j0)
{
  __m256 bias[2];
  __m256i mk[2];
  int nc[2];

  for (int v = 0; v < nv; v++) {
    nc[v] = cols - v * 8;
    mk[v] = mask8 (nc[v]);
    bias[v] = e->bias ? load8_n (e->bias + j0 + v * 8, nc[v], mk[v])
        : _mm256_setzero_ps ();
  }
#pragma GCC unroll 6
  for (int r = 0; r < MR2; r++) {
    if (r >= rows)
      break;
    float *cr = c + (gsize) r * ldc;
    const float *rr = e->res ? e->res + (gsize) r * ldc : NULL;
#pragma GCC unroll 2
    for (int v = 0; v < nv; v++) {
      __m256 x = act8 (_mm256_add_ps (acc[r][v], bias[v]), e->act);
      if (e->beta != 0.0f)
        x = _mm256_fmadd_ps (_mm256_set1_ps (e->beta),
            load8_n (cr + v * 8, nc[v], mk[v]), x);
      if (rr)
        x = _mm256_fmadd_ps (_mm256_set1_ps (e->alpha),
            load8_n (rr + v * 8, nc[v], mk[v]), x);
      store8_n (cr + v * 8, x, nc[v], mk[v]);
      if (e->acc) {
        float *ar = e->acc + (gsize) r * ldc + v * 8;
        store8_n (ar, _mm256_fmadd_ps (_mm256_set1_ps (e->acc_w), x,
                load8_n (ar, nc[v], mk[v])), nc[v], mk[v]);
      }
    }
  }
}

/* A tile of rows × cols (≤ 16) of C from B's columns at bp (row stride
 * w, the panel's width). */
T_AVX2 INLINE void
tile_avx2 (int nv, const float *a, gsize lda, int rows, const float *bp,
    int w, int k, float *c, gsize ldc, int cols, const EhatGemmEpi *e,
    int j0)
{
  __m256 acc[MR2][2];
  const float *ar[MR2];

#pragma GCC unroll 6
  for (int r = 0; r < MR2; r++) {
    ar[r] = a + (gsize) MIN (r, rows - 1) * lda;
    acc[r][0] = acc[r][1] = _mm256_setzero_ps ();
  }
  for (int i = 0; i < k; i++, bp += w) {
    __m256 b0 = _mm256_loadu_ps (bp);
    __m256 b1 = nv > 1 ? _mm256_loadu_ps (bp + 8) : _mm256_setzero_ps ();
#pragma GCC unroll 6
    for (int r = 0; r < MR2; r++) {
      __m256 av = _mm256_broadcast_ss (ar[r] + i);
      acc[r][0] = _mm256_fmadd_ps (av, b0, acc[r][0]);
      if (nv > 1)
        acc[r][1] = _mm256_fmadd_ps (av, b1, acc[r][1]);
    }
  }
  store_tile_avx2 (acc, nv, rows, cols, c, ldc, e, j0);
}

T_AVX2 static void
tile_avx2_2 (const float *a, gsize lda, int rows, const float *bp, int w,
    int k, float *c, gsize ldc, int cols, const EhatGemmEpi *e, int j0)
{
  tile_avx2 (2, a, lda, rows, bp, w, k, c, ldc, cols, e, j0);
}

T_AVX2 static void
tile_avx2_1 (const float *a, gsize lda, int rows, const float *bp, int w,
    int k, float *c, gsize ldc, int cols, const EhatGemmEpi *e, int j0)
{
  tile_avx2 (1, a, lda, rows, bp, w, k, c, ldc, cols, e, j0);
}

/* As gemm_f32_block: blocks of 16 columns outer (they stay in L1 while
 * the row tiles pass), row tiles inner. */
static void
gemm_avx2_block (const EhatGemmB *b, const float *a, gsize lda, int m,
    float *c, gsize ldc, const EhatGemmEpi *e)
{
  for (int j0 = 0, w; j0 < b->n; j0 += w) {
    w = ehat_tile_width (b->np, j0);
    const float *bp = (const float *) b->data + (gsize) j0 * b->kp;
    for (int s0 = 0; s0 < w && j0 + s0 < b->n; s0 += 16) {
      int cols = MIN (16, b->n - j0 - s0);
      for (int i0 = 0; i0 < m; i0 += MR2) {
        int rows = MIN (MR2, m - i0);
        const float *ai = a + (gsize) i0 * lda;
        float *ci = c + (gsize) i0 * ldc + j0 + s0;
        EhatGemmEpi ej = epi_at (e, (gsize) i0 * ldc + j0 + s0);
        if (cols > 8)
          tile_avx2_2 (ai, lda, rows, bp + s0, w, b->k, ci, ldc, cols, &ej,
              j0 + s0);
        else
          tile_avx2_1 (ai, lda, rows, bp + s0, w, b->k, ci, ldc, cols, &ej,
              j0 + s0);
      }
    }
  }
}

/* ---- bf16 ---- */

T_BF16 INLINE void
tile_bf16 (int nv, const guint16 *a, gsize lda, int rows, const guint16 *bp,
    int pairs, float *c, gsize ldc, int cols, const EhatGemmEpi *e, int j0)
{
  __m512 acc[MR][3];
  const gint32 *ar[MR];
  int w = nv * 16;

#pragma GCC unroll 8
  for (int r = 0; r < MR; r++) {
    ar[r] = (const gint32 *) (a + (gsize) MIN (r, rows - 1) * lda);
#pragma GCC unroll 3
    for (int v = 0; v < 3; v++)
      acc[r][v] = _mm512_setzero_ps ();
  }
  for (int p = 0; p < pairs; p++) {
    __m512bh bv[3];
#pragma GCC unroll 3
    for (int v = 0; v < nv; v++)
      bv[v] = (__m512bh) _mm512_loadu_si512 (bp + ((gsize) p * w + v * 16)
          * 2);
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
#pragma GCC unroll 3
      for (int v = 0; v < nv; v++)
        acc[r][v] = ehat_dpbf16_bcast (acc[r][v], bv[v], ar[r] + p);
    }
  }
  store_tile (acc, nv, rows, cols, c, ldc, e, j0);
}

T_BF16 static void
tile_bf16_3 (const guint16 *a, gsize lda, int rows, const guint16 *bp,
    int pairs, float *c, gsize ldc, int cols, const EhatGemmEpi *e, int j0)
{
  tile_bf16 (3, a, lda, rows, bp, pairs, c, ldc, cols, e, j0);
}

T_BF16 static void
tile_bf16_2 (const guint16 *a, gsize lda, int rows, const guint16 *bp,
    int pairs, float *c, gsize ldc, int cols, const EhatGemmEpi *e, int j0)
{
  tile_bf16 (2, a, lda, rows, bp, pairs, c, ldc, cols, e, j0);
}

T_BF16 static void
tile_bf16_1 (const guint16 *a, gsize lda, int rows, const guint16 *bp,
    int pairs, float *c, gsize ldc, int cols, const EhatGemmEpi *e, int j0)
{
  tile_bf16 (1, a, lda, rows, bp, pairs, c, ldc, cols, e, j0);
}

static void
gemm_bf16_block (const EhatGemmB *b, const guint16 *a, gsize lda, int m,
    float *c, gsize ldc, const EhatGemmEpi *e)
{
  int pairs = b->kp / 2;

  for (int j0 = 0, w; j0 < b->n; j0 += w) {
    int cols;
    w = ehat_tile_width (b->np, j0);
    cols = MIN (w, b->n - j0);
    const guint16 *bp = (const guint16 *) b->data + (gsize) j0 * b->kp;
    EhatGemmEpi ej;
    for (int i0 = 0; i0 < m; i0 += MR) {
      int rows = MIN (MR, m - i0);
      const guint16 *ai = a + (gsize) i0 * lda;
      float *ci = c + (gsize) i0 * ldc + j0;
      ej = epi_at (e, (gsize) i0 * ldc + j0);
      if (w == 48)
        tile_bf16_3 (ai, lda, rows, bp, pairs, ci, ldc, cols, &ej, j0);
      else if (w == 32)
        tile_bf16_2 (ai, lda, rows, bp, pairs, ci, ldc, cols, &ej, j0);
      else
        tile_bf16_1 (ai, lda, rows, bp, pairs, ci, ldc, cols, &ej, j0);
    }
  }
}

/* ---- narrow direct convolution ----
 * RR pixels of one image row × NN outputs in RR·NN accumulators of 16
 * channel lanes (fp32) or 16 channel pairs (bf16); each tap reads the
 * source pixel's channels straight from the map (a zero row outside it),
 * lanes summed at the end. */

/* The RR·NN sums of a block are contiguous in c (pixels of NN channels):
 * reduce each accumulator, then bias, activation and residual on vectors
 * of them. */
T_F32 INLINE void
narrow_epilogue (__m512 acc[8][8], int NN, int RR, int rows,
    const EhatGemmB *b, float *c, const EhatGemmEpi *e)
{
  float sum[64] __attribute__ ((aligned (64)));
  float bias[64] __attribute__ ((aligned (64)));
  int total = rows * NN;

#pragma GCC unroll 8
  for (int r = 0; r < RR; r++)
#pragma GCC unroll 8
    for (int n = 0; n < NN; n++) {
      sum[r * NN + n] = _mm512_reduce_add_ps (acc[r][n]);
      bias[r * NN + n] = e->bias[n];
    }
  for (int i0 = 0; i0 < total; i0 += 16) {
    __mmask16 m = lanes16 (total - i0);
    __m512 x = act16 (_mm512_add_ps (_mm512_maskz_load_ps (m, sum + i0),
            _mm512_maskz_load_ps (m, bias + i0)), e->act);
    if (e->res)
      x = _mm512_fmadd_ps (_mm512_set1_ps (e->alpha),
          _mm512_maskz_loadu_ps (m, e->res + i0), x);
    _mm512_mask_storeu_ps (c + i0, m, x);
  }
}

T_F32 INLINE void
narrow_f32 (int NN, int RR, const EhatGemmB *b, const float *x, int h,
    int w, int y, int x0, int rows, const float *zero, float *c,
    const EhatGemmEpi *e)
{
  __m512 acc[8][8];
  int k = b->conv_k, kk = k * k, cin = b->cin, cinp = b->cinp, r0 = k / 2;
  const float *wt = b->data;

#pragma GCC unroll 8
  for (int r = 0; r < RR; r++)
#pragma GCC unroll 8
    for (int n = 0; n < NN; n++)
      acc[r][n] = _mm512_setzero_ps ();
  for (int ky = 0; ky < k; ky++) {
    int sy = y + ky - r0;
    for (int kx = 0; kx < k; kx++) {
      const float *src[8];
      const float *wtap = wt + (gsize) (ky * k + kx) * cinp;
#pragma GCC unroll 8
      for (int r = 0; r < RR; r++) {
        int sx = x0 + MIN (r, rows - 1) + kx - r0;
        src[r] = (sy < 0 || sy >= h || sx < 0 || sx >= w) ? zero
            : x + ((gsize) sy * w + sx) * cin;
      }
      for (int c0 = 0; c0 < cin; c0 += 16) {
        __mmask16 m = cin - c0 >= 16 ? 0xffff : (__mmask16) ((1u << (cin
                    - c0)) - 1);
        __m512 wv[8];
#pragma GCC unroll 8
        for (int n = 0; n < NN; n++)
          wv[n] = _mm512_loadu_ps (wtap + (gsize) n * kk * cinp + c0);
#pragma GCC unroll 8
        for (int r = 0; r < RR; r++) {
          __m512 a = _mm512_maskz_loadu_ps (m, src[r] + c0);
#pragma GCC unroll 8
          for (int n = 0; n < NN; n++)
            acc[r][n] = _mm512_fmadd_ps (a, wv[n], acc[r][n]);
        }
      }
    }
  }
  narrow_epilogue (acc, NN, RR, rows, b, c, e);
}

T_BF16 INLINE void
narrow_bf16 (int NN, int RR, const EhatGemmB *b, const guint16 *x, int h,
    int w, int y, int x0, int rows, const guint16 *zero, float *c,
    const EhatGemmEpi *e)
{
  __m512 acc[8][8];
  int k = b->conv_k, kk = k * k, cs = round_up (b->cin, 2), cinp = b->cinp;
  int r0 = k / 2;
  const guint16 *wt = b->data;

#pragma GCC unroll 8
  for (int r = 0; r < RR; r++)
#pragma GCC unroll 8
    for (int n = 0; n < NN; n++)
      acc[r][n] = _mm512_setzero_ps ();
  for (int ky = 0; ky < k; ky++) {
    int sy = y + ky - r0;
    for (int kx = 0; kx < k; kx++) {
      const guint16 *src[8];
      const guint16 *wtap = wt + (gsize) (ky * k + kx) * cinp;
#pragma GCC unroll 8
      for (int r = 0; r < RR; r++) {
        int sx = x0 + MIN (r, rows - 1) + kx - r0;
        src[r] = (sy < 0 || sy >= h || sx < 0 || sx >= w) ? zero
            : x + ((gsize) sy * w + sx) * cs;
      }
      for (int c0 = 0; c0 < cs; c0 += 32) {
        __mmask32 m = cs - c0 >= 32 ? 0xffffffffu
            : (__mmask32) ((1u << (cs - c0)) - 1);
        __m512bh wv[8];
#pragma GCC unroll 8
        for (int n = 0; n < NN; n++)
          wv[n] = (__m512bh) _mm512_loadu_si512 (wtap + (gsize) n * kk * cinp
              + c0);
#pragma GCC unroll 8
        for (int r = 0; r < RR; r++) {
          __m512bh a = (__m512bh) _mm512_maskz_loadu_epi16 (m, src[r] + c0);
#pragma GCC unroll 8
          for (int n = 0; n < NN; n++)
            acc[r][n] = _mm512_dpbf16_ps (acc[r][n], a, wv[n]);
        }
      }
    }
  }
  narrow_epilogue (acc, NN, RR, rows, b, c, e);
}

#define NARROW_CASES(X) X (1, 8) X (2, 8) X (3, 8) X (4, 5) X (5, 4) X (6, 4) \
  X (7, 2) X (8, 2)

#define NARROW_FN(NN, RR) \
T_F32 static void \
narrow_f32_##NN (const EhatGemmB *b, const float *x, int h, int w, int y, \
    int x0, int rows, const float *zero, float *c, const EhatGemmEpi *e) \
{ \
  narrow_f32 (NN, RR, b, x, h, w, y, x0, rows, zero, c, e); \
} \
T_BF16 static void \
narrow_bf16_##NN (const EhatGemmB *b, const guint16 *x, int h, int w, int y, \
    int x0, int rows, const guint16 *zero, float *c, const EhatGemmEpi *e) \
{ \
  narrow_bf16 (NN, RR, b, x, h, w, y, x0, rows, zero, c, e); \
}
NARROW_CASES (NARROW_FN)
#undef NARROW_FN

/* The same on AVX2 + FMA: RR·NN accumulators of 8 channel lanes, RR
 * pixels chosen so that they, the NN weight vectors and the source vector
 * fit AVX2's 16 registers.  (HAT-S's 144 → 6: one pixel at a time took
 * 2.7 % of its run, two pixels, which spill, 3.6 %, and im2col with the
 * GEMM 3.5 %.) */
T_AVX2 INLINE void
narrow_epilogue_avx2 (__m256 acc[8][8], int NN, int RR, int rows,
    float *c, const EhatGemmEpi *e)
{
  float sum[64], bias[64];
  int total = rows * NN;

#pragma GCC unroll 8
  for (int r = 0; r < RR; r++)
#pragma GCC unroll 8
    for (int n = 0; n < NN; n++) {
      sum[r * NN + n] = ehat_hsum8 (acc[r][n]);
      bias[r * NN + n] = e->bias[n];
    }
  for (int i0 = 0; i0 < total; i0 += 8) {
    int nc = MIN (8, total - i0);
    __m256i m = mask8 (nc);
    __m256 x = act8 (_mm256_add_ps (load8_n (sum + i0, nc, m),
            load8_n (bias + i0, nc, m)), e->act);
    if (e->res)
      x = _mm256_fmadd_ps (_mm256_set1_ps (e->alpha), load8_n (e->res + i0,
              nc, m), x);
    ehat_store8_n (c + i0, x, nc);
  }
}

T_AVX2 INLINE void
narrow_avx2 (int NN, int RR, const EhatGemmB *b, const float *x, int h,
    int w, int y, int x0, int rows, const float *zero, float *c,
    const EhatGemmEpi *e)
{
  __m256 acc[8][8];
  int k = b->conv_k, kk = k * k, cin = b->cin, cinp = b->cinp, r0 = k / 2;
  const float *wt = b->data;

#pragma GCC unroll 8
  for (int r = 0; r < RR; r++)
#pragma GCC unroll 8
    for (int n = 0; n < NN; n++)
      acc[r][n] = _mm256_setzero_ps ();
  for (int ky = 0; ky < k; ky++) {
    int sy = y + ky - r0;
    for (int kx = 0; kx < k; kx++) {
      const float *src[8];
      const float *wtap = wt + (gsize) (ky * k + kx) * cinp;
#pragma GCC unroll 8
      for (int r = 0; r < RR; r++) {
        int sx = x0 + MIN (r, rows - 1) + kx - r0;
        src[r] = (sy < 0 || sy >= h || sx < 0 || sx >= w) ? zero
            : x + ((gsize) sy * w + sx) * cin;
      }
      for (int c0 = 0; c0 < cin; c0 += 8) {
        /* lanes past cin: zero weights (the packing pads to cinp), but
         * the map's next pixel must not be read past its end */
        int nc = MIN (8, cin - c0);
        __m256i m = mask8 (nc);
        __m256 wv[8];
#pragma GCC unroll 8
        for (int n = 0; n < NN; n++)
          wv[n] = _mm256_loadu_ps (wtap + (gsize) n * kk * cinp + c0);
#pragma GCC unroll 8
        for (int r = 0; r < RR; r++) {
          __m256 a = load8_n (src[r] + c0, nc, m);
#pragma GCC unroll 8
          for (int n = 0; n < NN; n++)
            acc[r][n] = _mm256_fmadd_ps (a, wv[n], acc[r][n]);
        }
      }
    }
  }
  narrow_epilogue_avx2 (acc, NN, RR, rows, c, e);
}

#define NARROW_CASES_AVX2(X) X (1, 8) X (2, 6) X (3, 4) X (4, 2) X (5, 2) \
  X (6, 1) X (7, 1) X (8, 1)

#define NARROW_FN(NN, RR) \
T_AVX2 static void \
narrow_avx2_##NN (const EhatGemmB *b, const float *x, int h, int w, int y, \
    int x0, int rows, const float *zero, float *c, const EhatGemmEpi *e) \
{ \
  narrow_avx2 (NN, RR, b, x, h, w, y, x0, rows, zero, c, e); \
}
NARROW_CASES_AVX2 (NARROW_FN)
#undef NARROW_FN

static int
narrow_rr (const EhatGemmB *b)
{
  int nn = b->n;
#define NARROW_RR(NN, RR) if (nn == NN) return RR;
  if (b->kind == EHAT_GEMM_NARROW_F32_AVX2) {
    NARROW_CASES_AVX2 (NARROW_RR)
  } else {
    NARROW_CASES (NARROW_RR)
  }
#undef NARROW_RR
  return 1;
}

T_BF16 static void
f32_to_bf16_avx512 (guint16 *dst, const float *src, gsize n)
{
  gsize i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256 ((__m256i *) (dst + i),
        (__m256i) _mm512_cvtneps_pbh (_mm512_loadu_ps (src + i)));
  if (i < n) {
    __mmask16 mk = (__mmask16) ((1u << (n - i)) - 1);
    _mm256_mask_storeu_epi16 (dst + i, mk,
        (__m256i) _mm512_cvtneps_pbh (_mm512_maskz_loadu_ps (mk, src + i)));
  }
}

/* ---- LayerNorm rows (the layernorm op, and fused into A's packing) ----
 * Two passes like PyTorch: the mean, then the biased variance around it
 * (one pass of Σx and Σx² loses the variance when the mean is large).
 * Lanes past c are masked off, so rows of any width sum in 16-lane
 * vectors; the whole row stays in L1 between the passes. */

T_F32 static void
row_stats_avx512 (const float *x, int c, float *mean, float *inv)
{
  __m512 s = _mm512_setzero_ps (), q = _mm512_setzero_ps (), vm;
  float m;

  for (int i = 0; i < c; i += 16)
    s = _mm512_add_ps (s, _mm512_maskz_loadu_ps (lanes16 (c - i), x + i));
  m = _mm512_reduce_add_ps (s) / c;
  vm = _mm512_set1_ps (m);
  for (int i = 0; i < c; i += 16) {
    __mmask16 mk = lanes16 (c - i);
    __m512 d = _mm512_maskz_sub_ps (mk, _mm512_maskz_loadu_ps (mk, x + i),
        vm);
    q = _mm512_fmadd_ps (d, d, q);
  }
  *mean = m;
  *inv = 1.0f / sqrtf (_mm512_reduce_add_ps (q) / c + 1e-5f);
}

/* ((x − mean)·inv)·w + b on the 16 lanes of mk at i */
T_F32 EHAT_INLINE __m512
ln16 (const EhatNormW *nw, const float *x, int i, __mmask16 mk, __m512 vm,
    __m512 vi)
{
  __m512 v = _mm512_mul_ps (_mm512_sub_ps (_mm512_maskz_loadu_ps (mk, x + i),
          vm), vi);
  return _mm512_fmadd_ps (v, _mm512_maskz_loadu_ps (mk, nw->w + i),
      _mm512_maskz_loadu_ps (mk, nw->b + i));
}

/* The row's mean and 1/σ in every lane. */
T_F32 EHAT_INLINE void
ln_consts (const float *x, int c, __m512 *vm, __m512 *vi)
{
  float mean, inv;

  row_stats_avx512 (x, c, &mean, &inv);
  *vm = _mm512_set1_ps (mean);
  *vi = _mm512_set1_ps (inv);
}

T_F32 static void
layernorm_row_avx512 (const EhatNormW *nw, const float *x, int c, float *y)
{
  __m512 vm, vi;

  ln_consts (x, c, &vm, &vi);
  for (int i = 0; i < c; i += 16) {
    __mmask16 mk = lanes16 (c - i);
    _mm512_mask_storeu_ps (y + i, mk, ln16 (nw, x, i, mk, vm, vi));
  }
}

/* LN(src) → bf16: LayerNorm fused into the conversion that packs A
 * anyway, the same floats as layernorm_row_avx512 before rounding. */
T_BF16 static void
norm_to_bf16_avx512 (guint16 *dst, const float *src, int n,
    const EhatNormW *nw)
{
  __m512 vm, vi;

  ln_consts (src, n, &vm, &vi);
  for (int i = 0; i < n; i += 16) {
    __mmask16 mk = lanes16 (n - i);
    _mm256_mask_storeu_epi16 (dst + i, mk,
        (__m256i) _mm512_cvtneps_pbh (ln16 (nw, src, i, mk, vm, vi)));
  }
}

#endif /* EHAT_GEMM_X86 */

/* The same without AVX-512 (vectorised by the clones). */
EHAT_CLONES static void
layernorm_row_plain (const EhatNormW *nw, const float *x, int c, float *y)
{
  float m = 0.0f, var = 0.0f, inv;
#pragma omp simd reduction(+:m)
  for (int k = 0; k < c; k++)
    m += x[k];
  m /= c;
#pragma omp simd reduction(+:var)
  for (int k = 0; k < c; k++)
    var += (x[k] - m) * (x[k] - m);
  inv = 1.0f / sqrtf (var / c + 1e-5f);
#pragma omp simd
  for (int k = 0; k < c; k++)
    y[k] = (x[k] - m) * inv * nw->w[k] + nw->b[k];
}

void
ehat_cpu_layernorm_row (const EhatNormW *nw, const float *x, int c, float *y,
    gboolean avx512)
{
#ifdef EHAT_GEMM_X86
  if (avx512) {
    layernorm_row_avx512 (nw, x, c, y);
    return;
  }
#endif
  layernorm_row_plain (nw, x, c, y);
}

void
ehat_f32_to_bf16 (guint16 *dst, const float *src, gsize n)
{
#ifdef EHAT_GEMM_X86
  probe ();
  if (hw_bf16) {
    f32_to_bf16_avx512 (dst, src, n);
    return;
  }
#endif
  for (gsize i = 0; i < n; i++)
    dst[i] = f32_to_bf16 (src[i]);
}

/* Rows of A per block: the block (fp32 or its bf16 copy) stays in L2 while
 * every panel passes over it. */
static int
block_rows (const EhatGemmB *b, int elem)
{
  int mb = (int) ((128 << 10) / ((gsize) MAX (b->kp, 1) * elem));
  return CLAMP (mb / MR * MR, MR, 512);
}

gsize
ehat_gemm_abuf_elems (const EhatGemmB *b)
{
  /* a block of A in bf16, or (fp32 kernels with a LayerNorm) in fp32 */
  gsize bf = (gsize) block_rows (b, 2) * b->kp;
  gsize f32 = (gsize) block_rows (b, 4) * b->k * 2;
  return MAX (bf, f32) + 32;
}

void
ehat_gemm (const EhatGemmB *b, const float *a, gsize lda, gsize m, float *c,
    gsize ldc, const EhatGemmEpi *e, const EhatNormW *norm, guint16 *abuf)
{
  if (m == 0)
    return;
  switch (b->kind) {
    case EHAT_GEMM_BLAS:
      g_assert (norm == NULL);
      gemm_blas (b, a, lda, m, c, ldc, e);
      return;
#ifdef EHAT_GEMM_X86
    case EHAT_GEMM_F32:
    case EHAT_GEMM_F32_AVX2:{
      int mb = block_rows (b, 4);
      for (gsize i0 = 0; i0 < m; i0 += mb) {
        int rows = (int) MIN ((gsize) mb, m - i0);
        const float *ab = a + i0 * lda;
        gsize ld = lda;
        EhatGemmEpi eb;
        if (norm) {
          /* the block normalised into abuf, read from L2 by every panel */
          float *nb = (float *) abuf;
          for (int r = 0; r < rows; r++)
            ehat_cpu_layernorm_row (norm, ab + r * lda, b->k,
                nb + (gsize) r * b->k, b->kind == EHAT_GEMM_F32);
          ab = nb;
          ld = b->k;
        }
        eb = epi_at (e, i0 * ldc);
        if (b->kind == EHAT_GEMM_F32)
          gemm_f32_block (b, ab, ld, rows, c + i0 * ldc, ldc, &eb);
        else
          gemm_avx2_block (b, ab, ld, rows, c + i0 * ldc, ldc, &eb);
      }
      return;
    }
    case EHAT_GEMM_BF16:{
      int mb = block_rows (b, 2);
      for (gsize i0 = 0; i0 < m; i0 += mb) {
        int rows = (int) MIN ((gsize) mb, m - i0);
        EhatGemmEpi eb;
        for (int r = 0; r < rows; r++) {
          guint16 *dr = abuf + (gsize) r * b->kp;
          if (norm)
            norm_to_bf16_avx512 (dr, a + (i0 + r) * lda, b->k, norm);
          else
            f32_to_bf16_avx512 (dr, a + (i0 + r) * lda, b->k);
          if (b->kp > b->k)
            dr[b->k] = 0;
        }
        eb = epi_at (e, i0 * ldc);
        gemm_bf16_block (b, abuf, b->kp, rows, c + i0 * ldc, ldc, &eb);
      }
      return;
    }
#endif
    default:
      g_assert_not_reached ();
  }
}

void
ehat_conv_narrow (const EhatGemmB *b, const void *x, int h, int w, int y0,
    int y1, float *c, const EhatGemmEpi *e)
{
#ifdef EHAT_GEMM_X86
  int rr = narrow_rr (b);
  /* the zero row read for taps outside the map */
  static const float zero[512] __attribute__ ((aligned (64)));
  g_autofree float *big = NULL;
  const float *z = zero;
  EhatGemmEpi ep = *e;

  g_assert (b->n <= EHAT_NARROW_MAX);
  g_assert (e->acc == NULL);
  if (b->cinp > (int) G_N_ELEMENTS (zero))
    z = big = g_new0 (float, b->cinp);
  for (int y = y0; y < y1; y++)
    for (int x0 = 0; x0 < w; x0 += rr) {
      int rows = MIN (rr, w - x0);
      gsize at = ((gsize) (y - y0) * w + x0) * b->n;
      ep.res = e->res ? e->res + at : NULL;
      if (b->kind == EHAT_GEMM_NARROW_BF16) {
        switch (b->n) {
#define CALL(NN, RR) case NN: narrow_bf16_##NN (b, x, h, w, y, x0, rows,             (const guint16 *) z, c + at, &ep); break;
            NARROW_CASES (CALL)
#undef CALL
          default:
            g_assert_not_reached ();
        }
      } else if (b->kind == EHAT_GEMM_NARROW_F32_AVX2) {
        switch (b->n) {
#define CALL(NN, RR) \
          case NN: \
            narrow_avx2_##NN (b, x, h, w, y, x0, rows, z, c + at, &ep); \
            break;
            NARROW_CASES_AVX2 (CALL)
#undef CALL
          default:
            g_assert_not_reached ();
        }
      } else {
        switch (b->n) {
#define CALL(NN, RR) case NN: narrow_f32_##NN (b, x, h, w, y, x0, rows, z,             c + at, &ep); break;
            NARROW_CASES (CALL)
#undef CALL
          default:
            g_assert_not_reached ();
        }
      }
    }
#else
  g_assert_not_reached ();
#endif
}

void
ehat_gemm_bf16a (const EhatGemmB *b, const guint16 *a, gsize lda, gsize m,
    float *c, gsize ldc, const EhatGemmEpi *e)
{
#ifdef EHAT_GEMM_X86
  int mb = block_rows (b, 2);

  g_assert (b->kind == EHAT_GEMM_BF16);
  for (gsize i0 = 0; i0 < m; i0 += mb) {
    EhatGemmEpi eb = epi_at (e, i0 * ldc);
    gemm_bf16_block (b, a + i0 * lda, lda, (int) MIN ((gsize) mb, m - i0),
        c + i0 * ldc, ldc, &eb);
  }
#else
  g_assert_not_reached ();
#endif
}
