/* DANet position attention (EHAT-SPEC.md §6) for the CUDA backend,
 * streamed in two passes so the hw×hw scores never exist in memory:
 *  1. stats: one thread per query, keys through shared memory, running max
 *     and sum of exp(q·k − max);
 *  2. apply: a block per (32 queries, 32 channels, image) recomputes a
 *     32×32 tile of probabilities per key tile in shared memory and
 *     accumulates P·V, then out += γ/sum·acc.
 * Simple fp32 version (scores are recomputed per 32-channel slice); a
 * flash-attention kernel on tensor cores can replace it. */
#include "ehat-cuda-common.cuh"

#define ST_KT 64                /* keys per tile, stats pass */
#define AP_Q 32                 /* queries per block, apply pass */
#define AP_K 32                 /* keys per tile, apply pass */
#define AP_C 32                 /* channels per block, apply pass */

template <int DQ>
__global__ void
pam_stats_kernel (const float *__restrict__ q, const float *__restrict__ k,
    size_t hw, int dq, float *__restrict__ stats)
{
  __shared__ float ks[ST_KT][DQ];
  size_t img = blockIdx.y;
  size_t i = (size_t) blockIdx.x * blockDim.x + threadIdx.x;
  bool active = i < hw;
  size_t ii = active ? i : hw - 1;
  const float *qp = q + (img * hw + ii) * dq;
  const float *kb = k + img * hw * dq;
  float qr[DQ];
#pragma unroll
  for (int e = 0; e < DQ; e++)
    qr[e] = e < dq ? qp[e] : 0.0f;
  float m = -INFINITY, l = 0.0f;

  for (size_t j0 = 0; j0 < hw; j0 += ST_KT) {
    int cnt = (int) (hw - j0 < ST_KT ? hw - j0 : ST_KT);
    __syncthreads ();
    for (int t = threadIdx.x; t < ST_KT * DQ; t += blockDim.x) {
      int jj = t / DQ, e = t % DQ;
      ks[jj][e] = (jj < cnt && e < dq) ? kb[(j0 + jj) * dq + e] : 0.0f;
    }
    __syncthreads ();
    for (int jj = 0; jj < cnt; jj++) {
      float s = 0.0f;
#pragma unroll
      for (int e = 0; e < DQ; e++)
        s += qr[e] * ks[jj][e];
      float mn = fmaxf (m, s);
      l = l * expf (m - mn) + expf (s - mn);
      m = mn;
    }
  }
  if (active) {
    stats[(img * hw + i) * 2] = m;
    stats[(img * hw + i) * 2 + 1] = l;
  }
}

/* Block (32 channels × 8); dynamic shared memory: qs [AP_Q][dqs],
 * ks [AP_K][dqs] (dqs = dq | 1 against bank conflicts), vs [AP_K][AP_C],
 * ps [AP_Q][AP_K + 1], mrow/lrow [AP_Q]. */
__global__ void
pam_apply_kernel (const float *__restrict__ q, const float *__restrict__ k,
    const float *__restrict__ v, size_t hw, int dq, int c, float gamma,
    const float *__restrict__ stats, float *__restrict__ out)
{
  extern __shared__ float sm[];
  const int dqs = dq | 1;
  float *qs = sm;
  float *ks = qs + AP_Q * dqs;
  float *vs = ks + AP_K * dqs;
  float *ps = vs + AP_K * AP_C;
  float *mrow = ps + AP_Q * (AP_K + 1);
  float *lrow = mrow + AP_Q;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int tid = ty * AP_C + tx, nthr = AP_C * 8;
  const size_t img = blockIdx.z;
  const size_t q0 = (size_t) blockIdx.x * AP_Q;
  const int c0 = blockIdx.y * AP_C;
  const int nqv = (int) (hw - q0 < AP_Q ? hw - q0 : AP_Q);
  const float *qb = q + img * hw * dq, *kb = k + img * hw * dq;
  const float *vb = v + img * hw * c;
  float acc[AP_Q / 8];

  for (int t = tid; t < AP_Q * dq; t += nthr) {
    int r = t / dq, e = t % dq;
    qs[r * dqs + e] = r < nqv ? qb[(q0 + r) * dq + e] : 0.0f;
  }
  for (int t = tid; t < AP_Q; t += nthr) {
    if (t < nqv) {
      mrow[t] = stats[(img * hw + q0 + t) * 2];
      lrow[t] = stats[(img * hw + q0 + t) * 2 + 1];
    } else {
      mrow[t] = 0.0f;
      lrow[t] = 1.0f;
    }
  }
#pragma unroll
  for (int r = 0; r < AP_Q / 8; r++)
    acc[r] = 0.0f;

  for (size_t j0 = 0; j0 < hw; j0 += AP_K) {
    int cnt = (int) (hw - j0 < AP_K ? hw - j0 : AP_K);
    __syncthreads ();
    for (int t = tid; t < AP_K * dq; t += nthr) {
      int jj = t / dq, e = t % dq;
      ks[jj * dqs + e] = jj < cnt ? kb[(j0 + jj) * dq + e] : 0.0f;
    }
    for (int t = tid; t < AP_K * AP_C; t += nthr) {
      int jj = t / AP_C, ch = t % AP_C;
      vs[t] = (jj < cnt && c0 + ch < c) ? vb[(j0 + jj) * c + c0 + ch] : 0.0f;
    }
    __syncthreads ();
    for (int t = tid; t < AP_Q * AP_K; t += nthr) {
      int r = t / AP_K, jj = t % AP_K;
      float s = 0.0f;
      for (int e = 0; e < dq; e++)
        s += qs[r * dqs + e] * ks[jj * dqs + e];
      ps[r * (AP_K + 1) + jj] = (jj < cnt && r < nqv) ? expf (s - mrow[r])
          : 0.0f;
    }
    __syncthreads ();
#pragma unroll
    for (int r = 0; r < AP_Q / 8; r++) {
      const float *pr = ps + (ty + 8 * r) * (AP_K + 1);
      float a = acc[r];
#pragma unroll 8
      for (int jj = 0; jj < AP_K; jj++)
        a += pr[jj] * vs[jj * AP_C + tx];
      acc[r] = a;
    }
  }
  if (c0 + tx < c) {
#pragma unroll
    for (int r = 0; r < AP_Q / 8; r++) {
      int qi = ty + 8 * r;
      if (qi < nqv)
        out[(img * hw + q0 + qi) * c + c0 + tx] += gamma / lrow[qi] * acc[r];
    }
  }
}

extern "C" cudaError_t
ehat_cuda_pam_stats (cudaStream_t s, const float *q, const float *k, int n,
    size_t hw, int dq, float *stats)
{
  if (n == 0 || hw == 0)
    return cudaSuccess;
  dim3 grid ((unsigned) ((hw + 127) / 128), n);
  if (dq <= 8)
    pam_stats_kernel<8> <<< grid, 128, 0, s >>> (q, k, hw, dq, stats);
  else if (dq <= 16)
    pam_stats_kernel<16> <<< grid, 128, 0, s >>> (q, k, hw, dq, stats);
  else if (dq <= 32)
    pam_stats_kernel<32> <<< grid, 128, 0, s >>> (q, k, hw, dq, stats);
  else if (dq <= 64)
    pam_stats_kernel<64> <<< grid, 128, 0, s >>> (q, k, hw, dq, stats);
  else
    return cudaErrorInvalidValue;
  return cudaGetLastError ();
}

extern "C" cudaError_t
ehat_cuda_pam_apply (cudaStream_t s, const float *q, const float *k,
    const float *v, int n, size_t hw, int dq, int c, float gamma,
    const float *stats, float *out)
{
  int dqs = dq | 1;
  size_t smem = ((size_t) (AP_Q + AP_K) * dqs + AP_K * AP_C
      + AP_Q * (AP_K + 1) + 2 * AP_Q) * sizeof (float);
  if (n == 0 || hw == 0)
    return cudaSuccess;
  if (smem > 48 * 1024 || (hw + AP_Q - 1) / AP_Q > 0x7fffffffu)
    return cudaErrorInvalidValue;
  dim3 grid ((unsigned) ((hw + AP_Q - 1) / AP_Q), (c + AP_C - 1) / AP_C, n);
  dim3 block (AP_C, 8);
  pam_apply_kernel <<< grid, block, smem, s >>> (q, k, v, hw, dq, c, gamma,
      stats, out);
  return cudaGetLastError ();
}
