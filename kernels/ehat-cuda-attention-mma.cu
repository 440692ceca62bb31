/* Window attention on tensor cores (fp16/bf16 storage, compute capability
 * 8.0 and newer): HAB's shifted-window self-attention and OCAB's
 * overlapping cross-attention, with the semantics of the SIMT kernel in
 * ehat-cuda-attention.cu (which stays the path for fp32/tf32, older GPUs
 * and shapes this one does not take).
 *
 * One block per (image, window, head).  The window's keys and values are
 * gathered once into shared memory (the cyclic shift and the OCAB unfold are
 * index arithmetic; K as [key][dim], V transposed as [dim][key] so that
 * ldmatrix reads both mma B operands, 16 keys or dims at a time; rows padded
 * by 8 elements, a multiple of 16 bytes long, so that the 8 rows of an
 * ldmatrix phase hit different banks).  Each warp then takes 16 queries at a
 * time, flash-attention style: S = Q·Kᵀ for 16 keys with mma.m16n8k16 (fp32
 * accumulation), scale, relative-position bias and shift mask added in fp32,
 * an online softmax per row (running max and sum, quad shuffles), and O +=
 * P·V with P taken straight from the S accumulators (their layout is the A
 * operand's), so scores never leave registers.  Scores are kept in base 2
 * (scale and bias times log2 e, then exp2), which saves the multiply that
 * __expf does per score.
 *
 * The position bias comes from one of two places.  REL (the network's
 * index, which is separable: EhatCudaRelBias): the head's table, a few KiB,
 * is read into shared memory once per block and entry (qoff[i] + koff[j])
 * mod len is added.  Otherwise the dense [head][key][query] expansion is
 * read from global memory per score: 256 KiB a block at HAT-L's 256-query
 * windows and 576 KiB for its OCAB, against 32–72 KiB of keys and values,
 * so that stream dominated the kernel's memory traffic (through L2, as the
 * 1.5–3.4 MiB expansion of a layer stays there). */
#include "ehat-cuda-mma.cuh"

#include <stdlib.h>
#include <string.h>

/* warps per block at most: one per 16 queries, so that small windows (the
 * shipped models' 8×8: 4 row tiles) do not hold idle warps' registers */
#define MMA_WARPS 8
#define LOG2E_F 1.44269504088896341f

__device__ __forceinline__ int
region (int p, int size, int ws, int shift)
{
  return p < size - ws ? 0 : (p < size - shift ? 1 : 2);
}

/* Token row of window position (y, x) of a window at (wy, wx), or −1 for
 * an OCAB key outside the map (a zero vector).  *reg: the shift-mask
 * region (HAB with shift only). */
template <bool OVERLAP>
__device__ __forceinline__ long long
token_row (size_t img, int h, int w, int ws, int param, int wy, int wx,
    int span, int j, int *reg)
{
  *reg = 0;
  if (OVERLAP) {
    int pad = (param - ws) / 2;
    int ky = wy * ws - pad + j / span, kx = wx * ws - pad + j % span;
    if (ky < 0 || ky >= h || kx < 0 || kx >= w)
      return -1;
    return (long long) ((img * h + ky) * w + kx);
  }
  int ky = wy * ws + j / ws, kx = wx * ws + j % ws;
  int shift = param;
  if (shift)
    *reg = region (ky, h, ws, shift) * 3 + region (kx, w, ws, shift);
  return (long long) ((img * h + (ky + shift) % h) * w + (kx + shift) % w);
}

/* OVERLAP false: HAB (param = shift); true: OCAB (param = wse).  DP: head
 * dim padded to 16 or 32 (or 64). */
/* Blocks per SM to budget registers for: three HAB blocks of ≤ 32 dims
 * (≤ 80 registers, what ptxas picks by itself); two with 64 dims, and for
 * OCAB, whose keys and values take about 90 KiB of shared memory at HAT-L's
 * sizes so that no third block fits anyway (≤ 128 registers: left to
 * itself, ptxas chose 80 for OCAB with the table bias and spilled). */
template <typename T, int DP, bool OVERLAP, bool REL>
__global__ void __launch_bounds__ (MMA_WARPS * 32, OVERLAP || DP > 32 ? 2 : 3)
attention_mma_kernel (const T *__restrict__ qkv, int h, int w, int c,
    int heads, int ws, int param, int nq, int nk, int nwy, int nwx,
    const float *__restrict__ bias, EhatCudaRelBias rel, float scale2,
    T *__restrict__ out)
{
  extern __shared__ __align__ (16) unsigned char smem_raw[];
  const int nkp = (nk + 15) & ~15;
  const int KS = DP + 8;        /* Ks row stride (elements) */
  const int VS = nkp + 8;       /* Vt row stride */
  T *Ks = (T *) smem_raw;
  T *Vt = Ks + (size_t) nkp * KS;
  /* REL: the head's bias table (times log2 e) and the keys' offsets */
  float *tab = (float *) (Vt + (size_t) DP * VS);
  int *koff = (int *) (tab + (REL ? rel.rows : 0));
  signed char *kreg = (signed char *) (koff + (REL ? nkp : 0));

  const int d = c / heads;
  const size_t stride = 3 * (size_t) c;
  const int hd = blockIdx.x % heads;
  const int win = blockIdx.x / heads;
  const int wx = win % nwx, wy = (win / nwx) % nwy;
  const size_t img = (size_t) (win / (nwx * nwy));
  const int span = OVERLAP ? param : ws;
  const int shift = OVERLAP ? 0 : param;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t4 = lane & 3;

  /* keys and values of the window (zero beyond nk and outside the map):
   * a thread per key and 8 dims, so that a key's token row (divisions,
   * the shift, the OCAB border) is found once per 8 elements, not per
   * element */
  for (int idx = threadIdx.x; idx < nkp * (DP / 8); idx += blockDim.x) {
    int j = idx / (DP / 8), e0 = idx % (DP / 8) * 8, reg = 0;
    const T *kp = NULL;
    if (j < nk) {
      long long row = token_row<OVERLAP> (img, h, w, ws, param, wy, wx, span,
          j, &reg);
      if (row >= 0)
        kp = qkv + (size_t) row * stride + c + (size_t) hd * d;
    }
#pragma unroll
    for (int e = e0; e < e0 + 8; e++) {
      bool in = kp && e < d;
      st (Ks + (size_t) j * KS + e, in ? ld (kp + e) : 0.0f);
      st (Vt + (size_t) e * VS + j, in ? ld (kp + c + e) : 0.0f);
    }
    if (e0 == 0) {
      kreg[j] = (signed char) reg;
      if (REL)
        koff[j] = j < nk ? rel.koff[j] : 0;
    }
  }
  if (REL)
    for (int t = threadIdx.x; t < rel.rows; t += blockDim.x)
      tab[t] = rel.table[(size_t) t * heads + hd] * LOG2E_F;
  __syncthreads ();

  const float *bh = REL ? bias : bias + (size_t) hd * nk * nq;
  for (int m0 = warp * 16; m0 < nq; m0 += (int) (blockDim.x >> 5) * 16) {
    /* this thread's two query rows: m0 + g and m0 + g + 8 */
    size_t qrow[2];
    int qreg[2], qoff[2];
    uint32_t qa[DP / 16][4];
    for (int r = 0; r < 2; r++) {
      int i = m0 + g + 8 * r;
      int py = wy * ws + i / ws, px = wx * ws + i % ws;
      qreg[r] = 0;
      qoff[r] = REL ? rel.qoff[i] : 0;
      if (OVERLAP) {
        qrow[r] = (img * h + py) * w + px;
      } else {
        qrow[r] = (img * h + (py + shift) % h) * w + (px + shift) % w;
        if (shift)
          qreg[r] = region (py, h, ws, shift) * 3 + region (px, w, ws, shift);
      }
    }
#pragma unroll
    for (int ks = 0; ks < DP / 16; ks++) {
      float v[2][4];
      for (int r = 0; r < 2; r++) {
        const T *qp = qkv + qrow[r] * stride + (size_t) hd * d;
        int e0 = ks * 16 + 2 * t4;
        v[r][0] = e0 < d ? ld (qp + e0) : 0.0f;
        v[r][1] = e0 + 1 < d ? ld (qp + e0 + 1) : 0.0f;
        v[r][2] = e0 + 8 < d ? ld (qp + e0 + 8) : 0.0f;
        v[r][3] = e0 + 9 < d ? ld (qp + e0 + 9) : 0.0f;
      }
      qa[ks][0] = pack2 (v[0][0], v[0][1], (T *) 0);
      qa[ks][1] = pack2 (v[1][0], v[1][1], (T *) 0);
      qa[ks][2] = pack2 (v[0][2], v[0][3], (T *) 0);
      qa[ks][3] = pack2 (v[1][2], v[1][3], (T *) 0);
    }

    float o[DP / 8][4];
#pragma unroll
    for (int nt = 0; nt < DP / 8; nt++)
      o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.0f;
    float mrow[2] = { -INFINITY, -INFINITY }, lrow[2] = { 0.0f, 0.0f };

    for (int j0 = 0; j0 < nkp; j0 += 16) {
      /* S for keys j0..j0+15: two n-tiles of 8 */
      float s[2][4] = { {0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f} };
      /* one ldmatrix per 16 dims: (keys 0-7, dims 0-7), (0-7, 8-15),
       * (8-15, 0-7), (8-15, 8-15) are b0, b1 of n-tile 0, then of 1 */
      const T *kr = Ks + (size_t) (j0 + (lane & 7) + ((lane >> 4) << 3)) * KS
          + ((lane >> 3) & 1) * 8;
#pragma unroll
      for (int ks = 0; ks < DP / 16; ks++) {
        uint32_t kb[4];
        ldmatrix_x4 (kb, kr + ks * 16);
        mma16816 (s[0], qa[ks], kb[0], kb[1], (T *) 0);
        mma16816 (s[1], qa[ks], kb[2], kb[3], (T *) 0);
      }
      /* scale, bias, mask (all times log2 e); the running max */
      float mt[2] = { -INFINITY, -INFINITY };
#pragma unroll
      for (int nt = 0; nt < 2; nt++)
#pragma unroll
        for (int q = 0; q < 4; q++) {
          int r = q >> 1, j = j0 + nt * 8 + 2 * t4 + (q & 1);
          int i = m0 + g + 8 * r;
          float v;
          if (j < nk) {
            float b;
            if (REL) {
              int k = qoff[r] + koff[j];
              b = tab[k >= rel.len ? k - rel.len : k];
            } else {
              b = bh[(size_t) j * nq + i] * LOG2E_F;
            }
            v = fmaf (s[nt][q], scale2, b);
            if (!OVERLAP && shift && kreg[j] != qreg[r])
              v += -100.0f * LOG2E_F;
          } else {
            v = -INFINITY;
          }
          s[nt][q] = v;
          mt[r] = fmaxf (mt[r], v);
        }
      float corr[2];
#pragma unroll
      for (int r = 0; r < 2; r++) {
        mt[r] = fmaxf (mt[r], __shfl_xor_sync (0xffffffffu, mt[r], 1));
        mt[r] = fmaxf (mt[r], __shfl_xor_sync (0xffffffffu, mt[r], 2));
        float mn = fmaxf (mrow[r], mt[r]);
        corr[r] = exp2f (mrow[r] - mn);       /* 0 on the first block */
        mrow[r] = mn;
        lrow[r] *= corr[r];
      }
#pragma unroll
      for (int nt = 0; nt < DP / 8; nt++) {
        o[nt][0] *= corr[0];
        o[nt][1] *= corr[0];
        o[nt][2] *= corr[1];
        o[nt][3] *= corr[1];
      }
      /* P = exp(S − max) as the A operand of P·V (keys are its k) */
#pragma unroll
      for (int nt = 0; nt < 2; nt++)
#pragma unroll
        for (int q = 0; q < 4; q++) {
          float p = exp2f (s[nt][q] - mrow[q >> 1]);
          s[nt][q] = p;
          lrow[q >> 1] += p;    /* this thread's columns; quad-summed last */
        }
      uint32_t pa[4];
      pa[0] = pack2 (s[0][0], s[0][1], (T *) 0);
      pa[1] = pack2 (s[0][2], s[0][3], (T *) 0);
      pa[2] = pack2 (s[1][0], s[1][1], (T *) 0);
      pa[3] = pack2 (s[1][2], s[1][3], (T *) 0);
      /* Vᵀ likewise, 16 dims (two n-tiles) per ldmatrix */
#pragma unroll
      for (int np = 0; np < DP / 16; np++) {
        uint32_t vb[4];
        ldmatrix_x4 (vb, Vt + (size_t) (np * 16 + (lane & 7)
                + ((lane >> 4) << 3)) * VS + j0 + ((lane >> 3) & 1) * 8);
        mma16816 (o[2 * np], pa, vb[0], vb[1], (T *) 0);
        mma16816 (o[2 * np + 1], pa, vb[2], vb[3], (T *) 0);
      }
    }

#pragma unroll
    for (int r = 0; r < 2; r++) {
      lrow[r] += __shfl_xor_sync (0xffffffffu, lrow[r], 1);
      lrow[r] += __shfl_xor_sync (0xffffffffu, lrow[r], 2);
      lrow[r] = 1.0f / lrow[r];
    }
#pragma unroll
    for (int nt = 0; nt < DP / 8; nt++)
#pragma unroll
      for (int q = 0; q < 4; q++) {
        int r = q >> 1, e = nt * 8 + 2 * t4 + (q & 1);
        if (e < d)
          st (out + qrow[r] * (size_t) c + (size_t) hd * d + e,
              o[nt][q] * lrow[r]);
      }
  }
}

/* One call's operands (param: shift for HAB, wse for OCAB; exactly one of
 * bias and rel set). */
typedef struct
{
  const void *qkv;
  int n, h, w, c, heads, ws, param, nk;
  const float *bias;
  const EhatCudaRelBias *rel;
  void *out;
} MmaCall;

template <typename T, int DP, bool OVERLAP, bool REL>
static cudaError_t
launch_mma (cudaStream_t s, const MmaCall *a)
{
  int d = a->c / a->heads, nq = a->ws * a->ws, nkp = (a->nk + 15) & ~15;
  int nwy = a->h / a->ws, nwx = a->w / a->ws;
  int threads = 32 * (nq / 16 < MMA_WARPS ? nq / 16 : MMA_WARPS);
  size_t tasks = (size_t) a->n * nwy * nwx * a->heads;
  size_t smem = ((size_t) nkp * (DP + 8) + (size_t) DP * (nkp + 8))
      * sizeof (T) + nkp;
  EhatCudaRelBias rel = { 0 };
  int dev = 0, optin = 0;
  cudaError_t e;

  if (REL) {
    rel = *a->rel;
    smem += ((size_t) rel.rows + nkp) * sizeof (float);
  }
  if (tasks == 0)
    return cudaSuccess;
  e = cudaGetDevice (&dev);
  if (e == cudaSuccess)
    e = cudaDeviceGetAttribute (&optin,
        cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (e != cudaSuccess)
    return e;
  if (smem > (size_t) optin || tasks > 0x7fffffffu)
    return cudaErrorNotSupported;
  auto kernel = attention_mma_kernel<T, DP, OVERLAP, REL>;
  e = cudaFuncSetAttribute (kernel,
      cudaFuncAttributeMaxDynamicSharedMemorySize, (int) smem);
  if (e != cudaSuccess)
    return e;
  kernel <<< (unsigned) tasks, threads, smem, s >>> ((const T *) a->qkv,
      a->h, a->w, a->c, a->heads, a->ws, a->param, nq, a->nk, nwy, nwx,
      a->bias, rel, (float) (LOG2E_F / sqrt ((double) d)), (T *) a->out);
  return cudaGetLastError ();
}

template <typename T, bool OVERLAP, bool REL>
static cudaError_t
dispatch_dp (cudaStream_t s, const MmaCall *a)
{
  int d = a->c / a->heads;

  if (d <= 16)
    return launch_mma<T, 16, OVERLAP, REL> (s, a);
  if (d <= 32)
    return launch_mma<T, 32, OVERLAP, REL> (s, a);
  if (d <= 64)
    return launch_mma<T, 64, OVERLAP, REL> (s, a);
  return cudaErrorNotSupported;
}

template <typename T>
static cudaError_t
dispatch_kind (cudaStream_t s, int overlap, const MmaCall *a)
{
  if (overlap)
    return a->rel ? dispatch_dp<T, true, true> (s, a)
        : dispatch_dp<T, true, false> (s, a);
  return a->rel ? dispatch_dp<T, false, true> (s, a)
      : dispatch_dp<T, false, false> (s, a);
}

extern "C" cudaError_t
ehat_cuda_attention_mma (cudaStream_t s, int dt, const void *qkv, int n,
    int h, int w, int c, int heads, int ws, int param, int overlap,
    const float *bias, const EhatCudaRelBias *rel, void *out)
{
  const char *force = getenv ("EHAT_CUDA_ATTENTION");
  int d = heads > 0 ? c / heads : 0;
  MmaCall a = { qkv, n, h, w, c, heads, ws, param,
    overlap ? param * param : ws * ws, bias, rel, out
  };

  if (dt == EHAT_CUDA_F32 || (force && strcmp (force, "simt") == 0)
      || d < 1 || heads * d != c || (ws * ws) % 16 != 0 || !bias == !rel
      || !ehat_cuda_have_mma ())
    return cudaErrorNotSupported;
  if (dt == EHAT_CUDA_F16)
    return dispatch_kind<__half> (s, overlap, &a);
  return dispatch_kind<__nv_bfloat16> (s, overlap, &a);
}
