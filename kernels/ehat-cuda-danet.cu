/* DANet position attention (EHAT-SPEC.md §6) for the CUDA backend,
 * streamed in two passes so the hw×hw scores never exist in memory:
 *  1. stats: one thread per query, keys through shared memory, running max
 *     and sum of exp(q·k − max);
 *  2. apply: a block per (32 queries, 32 channels, image) recomputes a
 *     32×32 tile of probabilities per key tile in shared memory and
 *     accumulates P·V, then out += γ/sum·acc.
 * q, k, v and out stored as T, fp32 arithmetic (scores are recomputed per
 * 32-channel slice); a flash-attention kernel on tensor cores can replace
 * it. */
#include "ehat-cuda-common.cuh"

#define ST_KT 64                /* keys per tile, stats pass */
#define AP_Q 32                 /* queries per block, apply pass */
#define AP_K 32                 /* keys per tile, apply pass */
#define AP_C 32                 /* channels per block, apply pass */

template <typename T, int DQ>
__global__ void
pam_stats_kernel (const T *__restrict__ q, const T *__restrict__ k,
    size_t hw, int dq, float *__restrict__ stats)
{
  __shared__ float ks[ST_KT][DQ];
  size_t img = blockIdx.y;
  size_t i = (size_t) blockIdx.x * blockDim.x + threadIdx.x;
  bool active = i < hw;
  size_t ii = active ? i : hw - 1;
  const T *qp = q + (img * hw + ii) * dq;
  const T *kb = k + img * hw * dq;
  float qr[DQ];
#pragma unroll
  for (int e = 0; e < DQ; e++)
    qr[e] = e < dq ? ld (qp + e) : 0.0f;
  float m = -INFINITY, l = 0.0f;

  for (size_t j0 = 0; j0 < hw; j0 += ST_KT) {
    int cnt = (int) (hw - j0 < ST_KT ? hw - j0 : ST_KT);
    __syncthreads ();
    for (int t = threadIdx.x; t < ST_KT * DQ; t += blockDim.x) {
      int jj = t / DQ, e = t % DQ;
      ks[jj][e] = (jj < cnt && e < dq) ? ld (kb + (j0 + jj) * dq + e) : 0.0f;
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
template <typename T>
__global__ void
pam_apply_kernel (const T *__restrict__ q, const T *__restrict__ k,
    const T *__restrict__ v, size_t hw, int dq, int c, float gamma,
    const float *__restrict__ stats, T *__restrict__ out)
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
  const T *qb = q + img * hw * dq, *kb = k + img * hw * dq;
  const T *vb = v + img * hw * c;
  float acc[AP_Q / 8];

  for (int t = tid; t < AP_Q * dq; t += nthr) {
    int r = t / dq, e = t % dq;
    qs[r * dqs + e] = r < nqv ? ld (qb + (q0 + r) * dq + e) : 0.0f;
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
      ks[jj * dqs + e] = jj < cnt ? ld (kb + (j0 + jj) * dq + e) : 0.0f;
    }
    for (int t = tid; t < AP_K * AP_C; t += nthr) {
      int jj = t / AP_C, ch = t % AP_C;
      vs[t] = (jj < cnt && c0 + ch < c) ? ld (vb + (j0 + jj) * c + c0 + ch)
          : 0.0f;
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
      if (qi < nqv) {
        T *op = out + (img * hw + q0 + qi) * c + c0 + tx;
        st (op, ld (op) + gamma / lrow[qi] * acc[r]);
      }
    }
  }
}

template <typename T>
static cudaError_t
pam_stats (cudaStream_t s, const T *q, const T *k, int n, size_t hw, int dq,
    float *stats)
{
  dim3 grid ((unsigned) ((hw + 127) / 128), n);
  if (dq <= 8)
    pam_stats_kernel<T, 8> <<< grid, 128, 0, s >>> (q, k, hw, dq, stats);
  else if (dq <= 16)
    pam_stats_kernel<T, 16> <<< grid, 128, 0, s >>> (q, k, hw, dq, stats);
  else if (dq <= 32)
    pam_stats_kernel<T, 32> <<< grid, 128, 0, s >>> (q, k, hw, dq, stats);
  else if (dq <= 64)
    pam_stats_kernel<T, 64> <<< grid, 128, 0, s >>> (q, k, hw, dq, stats);
  else
    return cudaErrorInvalidValue;
  return cudaGetLastError ();
}

extern "C" cudaError_t
ehat_cuda_pam_stats (cudaStream_t s, int dt, const void *q, const void *k,
    int n, size_t hw, int dq, float *stats)
{
  cudaError_t e = cudaSuccess;
  if (n == 0 || hw == 0)
    return cudaSuccess;
  EHAT_DISPATCH (dt, e = pam_stats<T> (s, (const T *) q, (const T *) k, n,
          hw, dq, stats));
  return e;
}

extern "C" cudaError_t
ehat_cuda_pam_apply (cudaStream_t s, int dt, const void *q, const void *k,
    const void *v, int n, size_t hw, int dq, int c, float gamma,
    const float *stats, void *out)
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
  EHAT_DISPATCH (dt, pam_apply_kernel<T> <<< grid, block, smem, s >>> (
          (const T *) q, (const T *) k, (const T *) v, hw, dq, c, gamma,
          stats, (T *) out));
  return cudaGetLastError ();
}
