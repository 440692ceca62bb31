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
#ifdef EHAT_NO_V4_CLONES
/* benchmarks only: the clones an AVX2 CPU runs, on an AVX-512 machine
 * (with EHAT_CPU_NO_AVX512=1 for the hand-written kernels) */
#define EHAT_CLONES \
  __attribute__ ((target_clones ("arch=x86-64-v3", "default")))
#else
#define EHAT_CLONES \
  __attribute__ ((target_clones ("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
#define EHAT_HAVE_CLONES 1
#else
#define EHAT_CLONES
#endif

/* Hand-written AVX-512 / AVX512-BF16 kernels (ehat-cpu-gemm.c,
 * ehat-cpu-attention.c): compiled with target attributes whatever the
 * build's -march, used only where ehat_cpu_has_avx512 / _bf16 say so. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(EHAT_NO_CLONES)
#define EHAT_X86_KERNELS 1
#define EHAT_T_F32 \
  __attribute__ ((target ("avx512f,avx512bw,avx512dq,avx512vl,fma,avx2,bmi2")))
#define EHAT_T_BF16 \
  __attribute__ ((target ("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,fma,avx2,bmi2")))
#define EHAT_T_AVX2 __attribute__ ((target ("avx2,fma")))
#define EHAT_INLINE static inline __attribute__ ((always_inline))
#include <immintrin.h>

/* acc += a·b over bf16 pairs, b being the pair at p in every lane: one
 * vdpbf16ps with an embedded {1to16} broadcast of its memory operand.
 * Compilers do not fold _mm512_set1_epi32 into this instruction (they do
 * for vfmadd231ps), and the separate vpbroadcastd takes a vector slot per
 * row of a register tile. */
EHAT_T_BF16 EHAT_INLINE __m512
ehat_dpbf16_bcast (__m512 acc, __m512bh a, const void *p)
{
  __asm__ ("vdpbf16ps %2%{1to16%}, %1, %0"
      : "+v" (acc) : "v" (a), "m" (*(const guint32 *) p));
  return acc;
}

/* AVX2: lanes [0, n) of a vector (for vmaskmovps, blends), and the sum
 * of a vector's lanes */
EHAT_T_AVX2 EHAT_INLINE __m256i
ehat_mask8 (int n)
{
  return _mm256_cmpgt_epi32 (_mm256_set1_epi32 (n),
      _mm256_setr_epi32 (0, 1, 2, 3, 4, 5, 6, 7));
}

EHAT_T_AVX2 EHAT_INLINE float
ehat_hsum8 (__m256 x)
{
  __m128 s = _mm_add_ps (_mm256_castps256_ps128 (x),
      _mm256_extractf128_ps (x, 1));
  s = _mm_add_ps (s, _mm_movehl_ps (s, s));
  s = _mm_add_ss (s, _mm_movehdup_ps (s));
  return _mm_cvtss_f32 (s);
}

/* Lanes [0, n) of x to p, without vmaskmovps (a slow store on AMD). */
EHAT_T_AVX2 EHAT_INLINE void
ehat_store8_n (float *p, __m256 x, int n)
{
  __m128 h = _mm256_castps256_ps128 (x);

  if (n >= 8) {
    _mm256_storeu_ps (p, x);
    return;
  }
  if (n >= 4) {
    _mm_storeu_ps (p, h);
    h = _mm256_extractf128_ps (x, 1);
    p += 4;
    n -= 4;
  }
  if (n >= 2) {
    _mm_storel_pi ((__m64 *) p, h);
    h = _mm_movehl_ps (h, h);
    p += 2;
    n -= 2;
  }
  if (n)
    _mm_store_ss (p, h);
}
#endif

/* The GEMMs of ehat-cpu-gemm.c, by the layout of their weights. */
typedef enum
{
  EHAT_GEMM_BLAS,               /* B row-major k×n floats, OpenBLAS */
  EHAT_GEMM_F32,                /* own AVX-512F kernels, fp32 panels */
  EHAT_GEMM_F32_AVX2,           /* own AVX2+FMA kernels, the same panels */
  EHAT_GEMM_BF16,               /* own AVX512-BF16 kernels, bf16 panels */
  /* convolutions with fewer outputs than a vector (HAT-S's CAB squeeze to
   * 6 channels, the last 3-channel one): direct, no im2col, vectors along
   * the input channels; weights [cout][k·k][cinp] */
  EHAT_GEMM_NARROW_F32,
  EHAT_GEMM_NARROW_F32_AVX2,    /* the same weights, AVX2 + FMA kernels */
  EHAT_GEMM_NARROW_BF16,
  /* 3×3 convolutions by Winograd F(4×4, 3×3): an EhatWinogradB */
  EHAT_GEMM_WINOGRAD,
} EhatGemmKind;

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
  /* GEMMs: bf16 (precision=bf16 on a CPU with AVX512-BF16), else f32_kind:
   * the own fp32 kernels (AVX-512F, or AVX2 with FMA) or OpenBLAS;
   * own_f32: the AVX-512 kernels (attention, narrow convolutions) */
  gboolean bf16, own_f32;
  EhatGemmKind f32_kind;
  /* per-thread bf16 rows of A (linear layers) */
  guint16 **abuf;
  gsize *abuf_len;
  /* the input of a bf16 convolution, in bf16 */
  guint16 *xbf;
  gsize xbf_len;
  /* per-thread row blocks of the fused operations (BLOCK_ROWS rows): the
   * MLP's hidden activations, LayerNorm's output where OpenBLAS
   * multiplies */
  float **block;
  gsize *block_len;
} EhatCpuBackend;

/* Width of the register tile starting at column j0 of n (a multiple of
 * 16): the kernels' tiles are 48 wide (three 16-lane vectors), but a
 * 16-wide tail becomes two tiles of 32, since a one-vector tile costs a
 * broadcast per product (HAT: the GEMMs' 60, 64, 256 and 540 outputs,
 * window attention's 256 keys = 4·48 + 2·32). */
static inline int
ehat_tile_width (int n, int j0)
{
  if (n % 48 == 16 && n >= 64 && n - j0 <= 64)
    return 32;
  return MIN (48, n - j0);
}

/* precision=bf16 needs ehat_cpu_has_bf16 (); the engine checks. */
EhatBackend *ehat_backend_cpu_new_full (int n_threads, gboolean bf16,
    GError **error);

/* ---- Portable vector maths ----
 *
 * Vectors of EHAT_VL floats in GCC/Clang's vector extensions, as wide as
 * the machine's registers where the code is compiled once: 8 (a ymm) on
 * x86-64 with clones, or where AVX is on; 4 elsewhere (SSE, NEON).  GCC
 * keeps wider vectors than the registers in memory, accumulators
 * included (GCC 12, SSE2 and aarch64: measured).  So the x86 baseline
 * clone runs these as pairs of xmm, slowly: it serves CPUs from before
 * AVX2 only.  The maths is written on vectors rather than as scalar loops
 * left to the vectoriser: GCC 12 left such loops scalar in some inlining
 * contexts (the clamps' compares became branches), which made the portable
 * attention and GELU several times slower on AVX2 machines.  The 4-byte
 * alignment makes loads and stores unaligned; GCC and Clang let vectors
 * alias their elements. */
#if defined(EHAT_HAVE_CLONES) || defined(__AVX__)
#define EHAT_VL 8
#else
#define EHAT_VL 4
#endif
#if defined(__GNUC__) && !defined(__clang__)
/* All of it is inlined (EHAT_VEC_FN): no call passes these vectors across
 * an ABI.  (GCC warns at the end of the including file, so this is not
 * popped.) */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
typedef float EhatVec
    __attribute__ ((vector_size (4 * EHAT_VL), aligned (4)));
typedef gint32 EhatVecI
    __attribute__ ((vector_size (4 * EHAT_VL), aligned (4)));

/* Functions on these vectors are always inlined: an out-of-line copy is
 * compiled for the baseline and takes its vectors in memory, where a
 * clone or an AVX2 kernel calling it passes them in registers (GCC's
 * -Wpsabi, silenced above, is that warning; a segfault in the Winograd
 * transforms was that). */
#define EHAT_VEC_FN static inline __attribute__ ((always_inline))

EHAT_VEC_FN EhatVec
ehat_vec_load (const float *p)
{
  return *(const EhatVec *) p;
}

EHAT_VEC_FN void
ehat_vec_store (float *p, EhatVec v)
{
  *(EhatVec *) p = v;
}

/* m ? a : b lane by lane (C has no ?: on vectors) */
EHAT_VEC_FN EhatVec
ehat_vec_select (EhatVecI m, EhatVec a, EhatVec b)
{
  return (EhatVec) (((EhatVecI) a & m) | ((EhatVecI) b & ~m));
}

EHAT_VEC_FN EhatVec
ehat_vec_clamp (EhatVec x, float lo, float hi)
{
  const EhatVec zero = { 0 };
  EhatVec vlo = zero + lo, vhi = zero + hi;

  x = ehat_vec_select (x < vhi, x, vhi);
  return ehat_vec_select (x > vlo, x, vlo);
}

/* e^x for x ≤ 88.7, relative error ≈ 2 ulp.  Inputs below −87.3 give
 * ≈ 0. */
EHAT_VEC_FN EhatVec
ehat_vec_exp (EhatVec x)
{
  const float magic = 12582912.0f;      /* 1.5·2^23: round to nearest */
  EhatVec r, p, n;

  x = ehat_vec_clamp (x, -87.3f, 88.37f);
  n = (x * 1.44269504088896341f + magic) - magic;
  r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  p = (EhatVec) { 0 } + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * (EhatVec) ((__builtin_convertvector (n, EhatVecI) + 127) << 23);
}

/* erf(x) as a rational approximation on [−4, 4] (erf(±4) rounds to ±1 in
 * float), max error a few ulp. */
EHAT_VEC_FN EhatVec
ehat_vec_erf (EhatVec x)
{
  EhatVec x2, p, q;

  x = ehat_vec_clamp (x, -4.0f, 4.0f);
  x2 = x * x;
  p = (EhatVec) { 0 } - 2.72614225801306e-10f;
  p = p * x2 + 2.77068142495902e-08f;
  p = p * x2 + -2.10102402082508e-06f;
  p = p * x2 + -5.69250639462346e-05f;
  p = p * x2 + -7.34990630326855e-04f;
  p = p * x2 + -2.95459980854025e-03f;
  p = p * x2 + -1.60960333262415e-02f;
  p = p * x;
  q = (EhatVec) { 0 } - 1.45660718464996e-05f;
  q = q * x2 + -2.13374055278905e-04f;
  q = q * x2 + -1.68282697438203e-03f;
  q = q * x2 + -7.37332916720468e-03f;
  q = q * x2 + -1.42647390514189e-02f;
  return p / q;
}

/* Exact (erf) GELU. */
EHAT_VEC_FN EhatVec
ehat_vec_gelu (EhatVec x)
{
  return 0.5f * x * (1.0f + ehat_vec_erf (x * 0.70710678118654752f));
}

/* The scalar forms: lane 0 (tails of vector loops, row corrections). */
static inline float
ehat_expf (float x)
{
  return ehat_vec_exp ((EhatVec) { x })[0];
}

static inline float
ehat_gelu (float x)
{
  return ehat_vec_gelu ((EhatVec) { x })[0];
}

/* s[j] = e^(s[j] − mx) over n floats; returns their sum (the softmaxes). */
static inline float
ehat_exp_shifted (float *s, gsize n, float mx)
{
  EhatVec vs = { 0 };
  float sum = 0.0f;
  gsize j = 0;

  for (; j + EHAT_VL <= n; j += EHAT_VL) {
    EhatVec e = ehat_vec_exp (ehat_vec_load (s + j) - mx);
    ehat_vec_store (s + j, e);
    vs += e;
  }
  for (; j < n; j++) {
    s[j] = ehat_expf (s[j] - mx);
    sum += s[j];
  }
  for (int l = 0; l < EHAT_VL; l++)
    sum += vs[l];
  return sum;
}

/* act on a vector */
EHAT_VEC_FN EhatVec
ehat_vec_activate (EhatVec x, EhatAct act)
{
  const EhatVec zero = { 0 };

  switch (act) {
    case EHAT_ACT_GELU:
      return ehat_vec_gelu (x);
    case EHAT_ACT_RELU:
      return ehat_vec_select (x > zero, x, zero);
    case EHAT_ACT_LRELU:
      return ehat_vec_select (x > zero, x, 0.01f * x);
    default:
      return x;
  }
}

/* act on the n floats at f, in place: the portable epilogues (the
 * AVX-512 kernels have their own, on registers, in ehat-cpu-gemm.c).  The
 * tail goes through a zero-padded vector, so that each activation is
 * written once.  Always inlined too: an out-of-line copy would run the
 * baseline's vectors inside the clones (it did, 3 % of a run). */
EHAT_VEC_FN void
ehat_activate (float *f, gsize n, EhatAct act)
{
  gsize i = 0;

  if (act == EHAT_ACT_NONE)
    return;
  for (; i + EHAT_VL <= n; i += EHAT_VL)
    ehat_vec_store (f + i, ehat_vec_activate (ehat_vec_load (f + i), act));
  if (i < n) {
    float t[EHAT_VL] = { 0 };
    memcpy (t, f + i, (n - i) * sizeof (float));
    ehat_vec_store (t, ehat_vec_activate (ehat_vec_load (t), act));
    memcpy (f + i, t, (n - i) * sizeof (float));
  }
}

/* Pixel shuffle by s of one pixel's cout values at src: value c·s² + a·s
 * + b becomes channel c of pixel (oy·s + a, ox·s + b) of y, an image ow
 * pixels wide of cout/s² channels. */
static inline void
ehat_shuffle_pixel (const float *src, int cout, int s, float *y, gsize ow,
    gsize oy, gsize ox)
{
  int ss = s * s, co = cout / ss;

  for (int a = 0; a < s; a++)
    for (int b = 0; b < s; b++) {
      float *dst = y + ((oy * s + a) * ow + ox * s + b) * co;
      const float *sq = src + a * s + b;
      for (int c = 0; c < co; c++)
        dst[c] = sq[c * ss];
    }
}

/* ---- GEMM with pre-packed weights (ehat-cpu-gemm.c) ---- */

/* B (k×n, the weights) in the layout of its kernel. */
typedef struct
{
  EhatGemmKind kind;
  int k, n;
  int kp;                       /* k, rounded up to even for bf16 */
  int np;                       /* n, rounded up to 16 for the own kernels */
  int conv_k, cin, cinp;        /* narrow kinds: kernel size, input channels
                                 * and their padded count */
  void *data;
} EhatGemmB;

/* C = act(A·B + bias) + beta·C + alpha·res (res rows of ldc; may be C
 * itself; beta ≠ 0 only with act NONE; C is read only when beta ≠ 0),
 * then acc += acc_w·C when acc is set (rows of ldc; EHAT's sums of block
 * outputs; not for the narrow convolution). */
typedef struct
{
  const float *bias;
  EhatAct act;
  float beta;
  const float *res;
  float alpha;
  float *acc;
  float acc_w;
} EhatGemmEpi;

gboolean ehat_cpu_has_avx512 (void);
/* AVX2 and FMA present (and EHAT_CPU_NO_AVX2 unset): the fp32 GEMM kernels
 * of CPUs without AVX-512. */
gboolean ehat_cpu_has_avx2 (void);
/* AVX512-BF16 present (and EHAT_CPU_NO_BF16 unset). */
gboolean ehat_cpu_has_bf16 (void);
float ehat_bf16_to_f32 (guint16 h);
void ehat_f32_to_bf16 (guint16 *dst, const float *src, gsize n);

void ehat_gemm_layout (EhatGemmB *b, EhatGemmKind kind, int k, int n);
gsize ehat_gemm_data_bytes (const EhatGemmB *b);
/* Packs B(i, j) = src[i·sk + j·sn] into data (ehat_gemm_data_bytes, 64-byte
 * aligned), which b then points to. */
void ehat_gemm_pack (EhatGemmB *b, void *data, const float *src, gsize sk,
    gsize sn);
/* The narrow direct convolution (cout ≤ EHAT_NARROW_MAX): layout, packing
 * from PyTorch's [cout][cin][k][k], and rows [y0, y1) of an image of h×w
 * (rows of cin floats, or of ehat_narrow_x_stride() bf16 for the bf16
 * kind) into c (rows of cout; e->res rows of cout at the same pixels). */
#define EHAT_NARROW_MAX 8
static inline gboolean
ehat_gemm_is_narrow (const EhatGemmB *b)
{
  return b->kind == EHAT_GEMM_NARROW_F32 || b->kind == EHAT_GEMM_NARROW_F32_AVX2
      || b->kind == EHAT_GEMM_NARROW_BF16;
}
void ehat_gemm_layout_narrow (EhatGemmB *b, EhatGemmKind kind, int k,
    int cin, int cout);
void ehat_gemm_pack_narrow (EhatGemmB *b, void *data, const float *w);
int ehat_narrow_x_stride (const EhatGemmB *b);
void ehat_conv_narrow (const EhatGemmB *b, const void *x, int h, int w,
    int y0, int y1, float *c, const EhatGemmEpi *e);
/* Scratch (in bf16 elements) a thread needs for ehat_gemm with a bf16 B,
 * or with a LayerNorm on A. */
gsize ehat_gemm_abuf_elems (const EhatGemmB *b);
/* C[m×n] (row stride ldc) = epilogue(A'·B), A fp32 rows of stride lda, and
 * A' = A, or LN(A) row by row when norm is set (own kernels only: the rows
 * are normalised as a block of A is converted to bf16 or copied to abuf,
 * where it stays in L2 for every panel).  abuf: ehat_gemm_abuf_elems()
 * for a bf16 B or a norm, else unused. */
void ehat_gemm (const EhatGemmB *b, const float *a, gsize lda, gsize m,
    float *c, gsize ldc, const EhatGemmEpi *e, const EhatNormW *norm,
    guint16 *abuf);
/* The same with A already bf16 (rows of lda elements, lda even, the pad
 * column past k zero), B bf16. */
void ehat_gemm_bf16a (const EhatGemmB *b, const guint16 *a, gsize lda,
    gsize m, float *c, gsize ldc, const EhatGemmEpi *e);

/* ---- Winograd 3×3 convolutions (ehat-cpu-winograd.c) ---- */

/* The 36 products' weights U[ξ][cin][cout], each packed for ehat_gemm of
 * kind gemm (fp32: the own kernels or OpenBLAS), stride bytes apart from
 * b.data; b.kind is EHAT_GEMM_WINOGRAD, b.k cin and b.n cout. */
typedef struct
{
  EhatGemmB b;
  EhatGemmKind gemm;
  gsize stride;
} EhatWinogradB;

/* Whether a k×k convolution of cin → cout channels gains (and
 * EHAT_CPU_CONV=im2col does not turn it off). */
gboolean ehat_winograd_suits (int k, int cin, int cout);
gsize ehat_winograd_data_bytes (EhatGemmKind gemm, int cin, int cout);
/* From PyTorch's [cout][cin][3][3] into data (ehat_winograd_data_bytes,
 * 64-byte aligned); FALSE: out of memory for the transform. */
gboolean ehat_winograd_pack (EhatWinogradB *wb, EhatGemmKind gemm,
    void *data, const float *w, int cin, int cout, GError **error);
/* Tiles (4×4 outputs) per call of ehat_winograd_conv, and the scratch
 * floats it needs. */
int ehat_winograd_strip (const EhatWinogradB *wb);
gsize ehat_winograd_scratch_floats (const EhatWinogradB *wb);
/* Tiles [tx0, tx1) of tile row ty of an image of h×w (rows of cin) into y
 * (rows of cout, or pixel-shuffled by shuffle > 1): act(conv + e->bias) +
 * e->alpha·e->res (rows of cout at the same pixels, before the shuffle;
 * may be y when shuffle is 1). */
void ehat_winograd_conv (const EhatWinogradB *wb, const float *x, int h,
    int w, int ty, int tx0, int tx1, float *y, int shuffle,
    const EhatGemmEpi *e, float *scratch);

/* LayerNorm of one row of c floats into y (may be x): eps 1e-5, biased
 * variance, two passes like PyTorch.  The layernorm op and the GEMM's
 * fused form compute it alike, so that both give the same floats.
 * avx512: the AVX-512 loop, which the caller asks for when its backend
 * runs the AVX-512 kernels (ehat_cpu_has_avx512), so that a backend made
 * with EHAT_CPU_NO_AVX512 tests the other one. */
void ehat_cpu_layernorm_row (const EhatNormW *nw, const float *x, int c,
    float *y, gboolean avx512);

/* Vectorised helpers used by the tests as well. */

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
