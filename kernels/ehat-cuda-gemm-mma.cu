/* Convolutions and linear layers as one tensor-core kernel each (fp16/bf16
 * storage, compute capability 8.0 and newer): an implicit GEMM whose A
 * operand is gathered straight from the NHWC feature map (the 3×3 taps and
 * their zero padding are index arithmetic, so no im2col band is written and
 * read back, and unaligned channel counts need no padded copy) and whose
 * epilogue applies bias, activation, the scaled residual, the narrowing to
 * the unpadded output width and the pixel shuffle before the one store.
 * The cuBLAS path (ehat-cuda-backend-gemm.c: im2col or row padding, GEMM,
 * then an epilogue pass) computes the same thing in three to four passes
 * over memory; which is faster is for `ehat bench` on the GPU to say, so the
 * backend picks this kernel only when EHAT_CUDA_GEMM=fused (or conv: for
 * the convolutions alone).
 *
 * Tiling: a block computes 128 output rows (pixels or tokens) × 64 output
 * channels with 4 warps of 64 × 32; K advances 32 at a time through a
 * 3-stage ring of shared buffers filled by cp.async (sm_80), two tiles in
 * flight while one feeds mma.m16n8k16 (fp32 accumulators), its fragments
 * read by ldmatrix (6 instructions per 16 mma instead of 24 32-bit
 * loads).  Shared rows are padded by 8 elements (80 bytes), so the 8
 * rows one ldmatrix phase reads fall in 8 different groups of 4 banks.
 * Each thread owns one A row of the block (its pixel's coordinates are
 * decoded once) and copies it as vectors of VW elements:
 * the widest that divides cin and the input's alignment, so a vector never
 * straddles two taps (2-byte vectors, cin odd, are plain copies). */
#include "ehat-cuda-mma.cuh"

#define GM_BM 128
#define GM_BN 64
#define GM_BK 32
#define GM_LDS (GM_BK + 8)      /* shared row stride (elements) */
#define GM_THREADS 128
#define GM_STAGES 3             /* shared buffers: 3 × 15 KiB */

/* VW elements of 2 bytes as one load */
template <int VW> struct GmVec;
template <> struct GmVec<8>
{
  typedef uint4 t;
};
template <> struct GmVec<4>
{
  typedef uint2 t;
};
template <> struct GmVec<2>
{
  typedef unsigned t;
};
template <> struct GmVec<1>
{
  typedef unsigned short t;
};

template <typename T, int VW>
__global__ void __launch_bounds__ (GM_THREADS)
gemm_fused_kernel (EhatCudaGemm g)
{
  typedef typename GmVec<VW>::t V;
  __shared__ __align__ (16) T As[GM_STAGES][GM_BM][GM_LDS];
  __shared__ __align__ (16) T Bs[GM_STAGES][GM_BN][GM_LDS];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int gq = lane >> 2, t4 = lane & 3;
  const int wm = (warp >> 1) * 64, wn = (warp & 1) * 32;
  const size_t m0 = (size_t) blockIdx.x * GM_BM;
  const int n0 = blockIdx.y * GM_BN;
  const int K = g.k * g.k * g.cin;
  const T *x = (const T *) g.x;
  const T *W = (const T *) g.wt;

  /* this thread's A row: a pixel (conv k > 1) or a token row */
  const size_t ar = m0 + tid;
  const bool a_ok = ar < g.rows;
  int py = 0, px = 0;
  if (g.k > 1 && a_ok) {
    size_t q = ar / g.w;
    px = (int) (ar - q * g.w);
    py = (int) (q % g.h);
  }
  const T *xrow = x + (a_ok ? ar : 0) * g.cin;
  /* (tap, channel) of the next K tile's first k, advanced a tile at a time
   * so that the copies below divide by nothing */
  int tap0 = 0, ci0 = 0;
  /* and its half of a B row (an output channel's 32 k) */
  const int bn = n0 + (tid >> 1), bk = (tid & 1) * 16;
  const bool b_ok = bn < g.cout;
  const T *wrow = W + (size_t) (b_ok ? bn : 0) * g.ldw;

  /* K tile kb → stage buf: this thread's A row and half B row */
  auto issue = [&](int kb, int buf) {
#pragma unroll
    for (int j = 0; j < GM_BK / VW; j++) {
      const T *src = x;
      bool ok;
      if (g.k == 1) {
        int kk = kb + j * VW;
        ok = a_ok && kk < K;
        if (ok)
          src = xrow + kk;
      } else {
        /* 3×3: tap = ky·3 + kx; the vector lies inside one tap's run */
        int ci = ci0 + j * VW, tap = tap0;
        while (ci >= g.cin) {
          ci -= g.cin;
          tap++;
        }
        int ky = tap / 3, kx = tap - 3 * ky;
        int sy = py + ky - 1, sx = px + kx - 1;
        ok = a_ok && tap < 9 && sy >= 0 && sy < g.h && sx >= 0 && sx < g.w;
        if (ok)
          src = xrow + ((long long) (ky - 1) * g.w + (kx - 1)) * g.cin + ci;
      }
      copy_async ((V *) &As[buf][tid][j * VW], (const V *) src, ok);
    }
    ci0 += GM_BK;
    while (ci0 >= g.cin) {
      ci0 -= g.cin;
      tap0++;
    }
#pragma unroll
    for (int j = 0; j < 2; j++) {
      int kk = kb + bk + j * 8;
      bool ok = b_ok && kk < g.ldw;
      copy_async ((uint4 *) &Bs[buf][tid >> 1][bk + j * 8],
          (const uint4 *) (ok ? wrow + kk : W), ok);
    }
  };

  float acc[4][4][4];
#pragma unroll
  for (int mi = 0; mi < 4; mi++)
#pragma unroll
    for (int ni = 0; ni < 4; ni++)
#pragma unroll
      for (int q = 0; q < 4; q++)
        acc[mi][ni][q] = 0.0f;

  /* GM_STAGES − 1 tiles in flight while one is multiplied; a group is
   * committed every step, empty or not, so the wait count stays fixed */
  const int nkt = (K + GM_BK - 1) / GM_BK;
#pragma unroll
  for (int s0 = 0; s0 < GM_STAGES - 1; s0++) {
    if (s0 < nkt)
      issue (s0 * GM_BK, s0);
    copy_async_commit ();
  }
  for (int kt = 0; kt < nkt; kt++) {
    const int buf = kt % GM_STAGES, nx = kt + GM_STAGES - 1;
    copy_async_wait<GM_STAGES - 2> ();
    /* tile kt is everyone's now, and stage nx % GM_STAGES (tile kt − 1)
     * has been read by everyone */
    __syncthreads ();
    if (nx < nkt)
      issue (nx * GM_BK, nx % GM_STAGES);
    copy_async_commit ();
#pragma unroll
    for (int ks = 0; ks < GM_BK; ks += 16) {
      uint32_t af[4][4], bf[2][4];
      /* A, a 16×16 per mi: matrices (rows 0-7, k 0-7), (8-15, 0-7),
       * (0-7, 8-15), (8-15, 8-15) are its registers 0..3, so lane l
       * gives row l % 16 at k half l / 16 */
#pragma unroll
      for (int mi = 0; mi < 4; mi++)
        ldmatrix_x4 (af[mi], &As[buf][wm + mi * 16 + (lane & 15)]
            [ks + (lane >> 4) * 8]);
      /* B, two n-groups of 8 per load: (n 0-7, k 0-7), (0-7, 8-15),
       * (8-15, 0-7), (8-15, 8-15) are b0, b1 of group 2·nj, then of
       * 2·nj + 1 */
#pragma unroll
      for (int nj = 0; nj < 2; nj++)
        ldmatrix_x4 (bf[nj], &Bs[buf][wn + nj * 16 + (lane & 7)
                + ((lane >> 4) << 3)][ks + ((lane >> 3) & 1) * 8]);
#pragma unroll
      for (int ni = 0; ni < 4; ni++) {
        const uint32_t *b = &bf[ni >> 1][(ni & 1) * 2];
#pragma unroll
        for (int mi = 0; mi < 4; mi++)
          mma16816 (acc[mi][ni], af[mi], b[0], b[1], (T *) 0);
      }
    }
  }

  /* epilogue: y = act(acc + b) + alpha·res, narrowed to cout, shuffled */
  const T *res = (const T *) g.res;
  T *y = (T *) g.y;
  const int sh = g.shuffle, ss = sh * sh, co = g.cout / ss;
  const size_t ow = (size_t) g.w * sh, oh = (size_t) g.h * sh;
  /* (o, o + 1) stored as one 32-bit word where rows keep it aligned */
  const bool pairs = sh == 1 && g.cout % 2 == 0 && (uintptr_t) y % 4 == 0;
#pragma unroll
  for (int mi = 0; mi < 4; mi++)
#pragma unroll
    for (int q2 = 0; q2 < 2; q2++) {
      const size_t row = m0 + wm + mi * 16 + gq + 8 * q2;
      if (row >= g.rows)
        continue;
      T *base = y + row * g.cout;
      if (sh > 1) {
        size_t q = row / g.w;
        size_t xx = row - q * g.w, yy = q % g.h, im = q / g.h;
        base = y + ((im * oh + yy * sh) * ow + xx * sh) * co;
      }
#pragma unroll
      for (int ni = 0; ni < 4; ni++) {
        const int o = n0 + wn + ni * 8 + 2 * t4;
        float v[2];
#pragma unroll
        for (int q1 = 0; q1 < 2; q1++) {
          v[q1] = 0.0f;
          if (o + q1 < g.cout) {
            v[q1] = ehat_dev_act (acc[mi][ni][2 * q2 + q1]
                + (g.b ? g.b[o + q1] : 0.0f), g.act);
            if (res)
              v[q1] += g.alpha * ld (res + row * g.cout + o + q1);
          }
        }
        if (pairs && o + 1 < g.cout) {
          *(uint32_t *) (base + o) = pack2 (v[0], v[1], (T *) 0);
          continue;
        }
#pragma unroll
        for (int q1 = 0; q1 < 2; q1++) {
          const int oc = o + q1;
          if (oc >= g.cout)
            continue;
          if (sh > 1)
            st (base + ((size_t) ((oc / sh) % sh) * ow + oc % sh) * co
                + oc / ss, v[q1]);
          else
            st (base + oc, v[q1]);
        }
      }
    }
}

template <typename T>
static cudaError_t
launch_vw (cudaStream_t s, const EhatCudaGemm *g)
{
  dim3 grid ((unsigned) ((g->rows + GM_BM - 1) / GM_BM),
      (unsigned) ((g->cout + GM_BN - 1) / GM_BN));
  /* the widest vector that divides a tap's channel run and x's alignment */
  uintptr_t al = (uintptr_t) g->x | ((uintptr_t) g->cin * 2);

  if (al % 16 == 0)
    gemm_fused_kernel<T, 8> <<< grid, GM_THREADS, 0, s >>> (*g);
  else if (al % 8 == 0)
    gemm_fused_kernel<T, 4> <<< grid, GM_THREADS, 0, s >>> (*g);
  else if (al % 4 == 0)
    gemm_fused_kernel<T, 2> <<< grid, GM_THREADS, 0, s >>> (*g);
  else
    gemm_fused_kernel<T, 1> <<< grid, GM_THREADS, 0, s >>> (*g);
  return cudaGetLastError ();
}

extern "C" cudaError_t
ehat_cuda_gemm_fused (cudaStream_t s, int dt, const EhatCudaGemm *g)
{
  if (dt == EHAT_CUDA_F32 || (g->k != 1 && g->k != 3) || g->cin < 1
      || g->k * g->k * g->cin > g->ldw || g->ldw % 8 != 0
      || (uintptr_t) g->wt % 16 != 0 || g->shuffle < 1
      || g->cout % (g->shuffle * g->shuffle) != 0
      || (g->k > 1 || g->shuffle > 1 ? g->h < 1 || g->w < 1 : 0)
      || !ehat_cuda_have_mma ())
    return cudaErrorNotSupported;
  if (g->rows == 0 || g->cout == 0)
    return cudaSuccess;
  if ((g->rows + GM_BM - 1) / GM_BM > 0x7fffffffu
      || (g->cout + GM_BN - 1) / GM_BN > 65535)
    return cudaErrorInvalidValue;
  if (dt == EHAT_CUDA_F16)
    return launch_vw<__half> (s, g);
  return launch_vw<__nv_bfloat16> (s, g);
}
