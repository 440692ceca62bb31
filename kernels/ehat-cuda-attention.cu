/* Fused window attention of the CUDA backend: HAB's shifted-window
 * self-attention and OCAB's overlapping cross-attention.
 *
 * One block per (image, window, head) and chunk of up to 256 queries, one
 * thread per query.  q (pre-scaled) and the output accumulator live in the
 * thread's registers; keys and values stream through shared memory in
 * tiles of KT, gathered straight from the qkv rows (the cyclic shift and
 * the OCAB unfold are index arithmetic, no shifted or unfolded copy
 * exists), with an online softmax (running max and sum) so any key count
 * fits.  The relative-position bias comes from the head's column of its
 * table, staged in shared memory, where the index is separable
 * (EhatCudaRelBias: a query's offset plus a key's), else pre-expanded per
 * call as [head][key][query] (coalesced over the queries of a warp); the
 * two add the same numbers in the same order.  The shift mask is computed
 * from the region labels.  q, k, v and the output are stored
 * as T (fp32, fp16 or bf16), all arithmetic is fp32.  fp16/bf16 on
 * compute capability 8.0+ take the tensor-core kernel of
 * ehat-cuda-attention-mma.cu instead; this one is the fp32/tf32 path and
 * the fallback. */
#include "ehat-cuda-common.cuh"

/* keys per shared-memory tile: the score loop is unrolled over KT·DMAX,
 * so the widest heads take shorter tiles (build time, registers) */
#define KT_FOR(DMAX) ((DMAX) >= 64 ? 8 : 16)
#define MAXQ 256                /* queries (threads) per block */

__global__ void
expand_bias_kernel (const float *table, const int32_t *index, int heads,
    int nq, int nk, float *dense)
{
  size_t total = (size_t) heads * nk * nq;
  GRID_STRIDE (o, total) {
    int i = (int) (o % nq);
    size_t r = o / nq;
    int j = (int) (r % nk);
    int hd = (int) (r / nk);
    dense[o] = table[(size_t) index[(size_t) i * nk + j] * heads + hd];
  }
}

extern "C" cudaError_t
ehat_cuda_expand_bias (cudaStream_t s, const float *table,
    const int32_t *index, int heads, int nq, int nk, float *dense)
{
  size_t total = (size_t) heads * nk * nq;
  expand_bias_kernel <<< ehat_blocks (total), EHAT_THREADS, 0, s >>> (table,
      index, heads, nq, nk, dense);
  return cudaGetLastError ();
}

/* Shift-mask region of a coordinate of the shifted map (EHAT-SPEC.md §4). */
__device__ __forceinline__ int
region (int p, int size, int ws, int shift)
{
  return p < size - ws ? 0 : (p < size - shift ? 1 : 2);
}

/* OVERLAP false: HAB (param = shift); true: OCAB (param = wse).  The bias:
 * with rel.table set, from the table (its column, rel.rows floats, in
 * dynamic shared memory); else from the dense expansion `bias`. */
template <typename T, int DMAX, bool OVERLAP>
__global__ void __launch_bounds__ (MAXQ)
attention_kernel (const T *__restrict__ qkv, int h, int w, int c,
    int heads, int ws, int param, int nq, int nk, int nwy, int nwx,
    const float *__restrict__ bias, EhatCudaRelBias rel, float scale,
    T *__restrict__ out)
{
  constexpr int KT = KT_FOR (DMAX);
  __shared__ float ks[KT][DMAX];
  __shared__ float vs[KT][DMAX];
  __shared__ long long krow[KT];        /* key's token row, −1: zero vector */
  __shared__ int kreg[KT];
  __shared__ int koff[KT];              /* rel: the key's table offset */
  extern __shared__ float tab[];        /* rel: the head's column */

  const int d = c / heads;
  const size_t stride = 3 * (size_t) c;
  const int task = blockIdx.x;
  const int hd = task % heads;
  const int win = task / heads;
  const int wx = win % nwx, wy = (win / nwx) % nwy;
  const size_t img = (size_t) (win / (nwx * nwy));
  const int i = blockIdx.y * blockDim.x + threadIdx.x;
  const bool active = i < nq;
  const int ii = active ? i : nq - 1;
  const int shift = OVERLAP ? 0 : param;
  const int wse = OVERLAP ? param : ws;
  const int pad = OVERLAP ? (wse - ws) / 2 : 0;

  /* this thread's query */
  int py = wy * ws + ii / ws, px = wx * ws + ii % ws;
  size_t qrow;
  int qreg = 0;
  if (OVERLAP) {
    qrow = (img * h + py) * w + px;
  } else {
    int sy = (py + shift) % h, sx = (px + shift) % w;
    qrow = (img * h + sy) * w + sx;
    if (shift)
      qreg = region (py, h, ws, shift) * 3 + region (px, w, ws, shift);
  }
  float q[DMAX], o[DMAX];
  {
    const T *qp = qkv + qrow * stride + (size_t) hd * d;
#pragma unroll
    for (int e = 0; e < DMAX; e++) {
      q[e] = e < d ? ld (qp + e) * scale : 0.0f;
      o[e] = 0.0f;
    }
  }
  float m = -INFINITY, l = 0.0f;
  const bool by_table = rel.table != nullptr;
  const float *brow = by_table ? bias : bias + (size_t) hd * nk * nq + ii;
  const int qoff = by_table ? rel.qoff[ii] : 0;

  /* visible after the tile loop's first barriers */
  if (by_table)
    for (int t = threadIdx.x; t < rel.rows; t += blockDim.x)
      tab[t] = rel.table[(size_t) t * heads + hd];

  for (int j0 = 0; j0 < nk; j0 += KT) {
    const int cnt = min (KT, nk - j0);

    __syncthreads ();           /* previous tile consumed */
    for (int t = threadIdx.x; t < KT; t += blockDim.x) {
      int j = j0 + t;
      long long row = -1;
      int reg = 0;
      if (t < cnt) {
        if (OVERLAP) {
          int ky = wy * ws - pad + j / wse, kx = wx * ws - pad + j % wse;
          if (ky >= 0 && ky < h && kx >= 0 && kx < w)
            row = (long long) ((img * h + ky) * w + kx);
        } else {
          int ky = wy * ws + j / ws, kx = wx * ws + j % ws;
          int sy = (ky + shift) % h, sx = (kx + shift) % w;
          row = (long long) ((img * h + sy) * w + sx);
          if (shift)
            reg = region (ky, h, ws, shift) * 3 + region (kx, w, ws, shift);
        }
      }
      krow[t] = row;
      kreg[t] = reg;
      koff[t] = by_table && t < cnt ? rel.koff[j] : 0;
    }
    __syncthreads ();
    for (int t = threadIdx.x; t < KT * DMAX; t += blockDim.x) {
      int jj = t / DMAX, e = t % DMAX;
      long long row = krow[jj];
      float kv = 0.0f, vv = 0.0f;
      if (row >= 0 && e < d) {
        const T *kp = qkv + (size_t) row * stride + c + (size_t) hd * d;
        kv = ld (kp + e);
        vv = ld (kp + c + e);
      }
      ks[jj][e] = kv;
      vs[jj][e] = vv;
    }
    __syncthreads ();

    float sc[KT];
    float mt = -INFINITY;
#pragma unroll
    for (int jj = 0; jj < KT; jj++) {
      float s = 0.0f;
#pragma unroll
      for (int e = 0; e < DMAX; e++)
        s += q[e] * ks[jj][e];
      if (jj < cnt) {
        if (by_table) {
          int k = qoff + koff[jj];
          s += tab[k >= rel.len ? k - rel.len : k];
        } else {
          s += brow[(size_t) (j0 + jj) * nq];
        }
        if (!OVERLAP && shift && kreg[jj] != qreg)
          s += -100.0f;
      } else {
        s = -INFINITY;
      }
      sc[jj] = s;
      mt = fmaxf (mt, s);
    }
    float mn = fmaxf (m, mt);
    float corr = expf (m - mn); /* 0 on the first tile (m = −∞) */
    l *= corr;
#pragma unroll
    for (int e = 0; e < DMAX; e++)
      o[e] *= corr;
#pragma unroll
    for (int jj = 0; jj < KT; jj++) {
      float p = expf (sc[jj] - mn);
      l += p;
#pragma unroll
      for (int e = 0; e < DMAX; e++)
        o[e] += p * vs[jj][e];
    }
    m = mn;
  }

  if (active) {
    float inv = 1.0f / l;
    T *op = out + qrow * (size_t) c + (size_t) hd * d;
#pragma unroll
    for (int e = 0; e < DMAX; e++)
      if (e < d)
        st (op + e, o[e] * inv);
  }
}

/* The table column's share of a block's shared memory: within the 48 KiB
 * every device gives without opting in, beside the key tiles (≤ 4.1 KiB);
 * HAT-L's OCAB column is 5.9 KiB.  A larger table takes the dense bias. */
#define MAX_TABLE_BYTES (32 << 10)

template <typename T, bool OVERLAP>
static cudaError_t
launch (cudaStream_t s, const T *qkv, int n, int h, int w, int c,
    int heads, int ws, int param, int nk, const float *bias,
    const EhatCudaRelBias *rel, T *out)
{
  int d = c / heads, nq = ws * ws;
  int nwy = h / ws, nwx = w / ws;
  size_t tasks = (size_t) n * nwy * nwx * heads;
  int threads = nq < MAXQ ? (nq + 31) / 32 * 32 : MAXQ;
  int chunks = (nq + threads - 1) / threads;
  float scale = (float) (1.0 / sqrt ((double) d));
  EhatCudaRelBias r = { 0 };
  size_t smem = 0;

  if (!bias == !rel)
    return cudaErrorInvalidValue;
  if (rel) {
    r = *rel;
    smem = (size_t) r.rows * sizeof (float);
    if (smem > MAX_TABLE_BYTES)
      return cudaErrorNotSupported;
  }
  if (tasks == 0)
    return cudaSuccess;
  if (d < 1 || heads * d != c || tasks > 0x7fffffffu || chunks > 65535)
    return cudaErrorInvalidValue;
  dim3 grid ((unsigned) tasks, chunks);
#define LAUNCH(D) attention_kernel<T, D, OVERLAP> <<< grid, threads, smem, \
      s >>> (qkv, h, w, c, heads, ws, param, nq, nk, nwy, nwx, bias, r, \
      scale, out)
  /* three register-tile sizes keep the build short (HAT's head dims are
   * 24 and 30); add 16 if small-head models matter */
  if (d <= 8)
    LAUNCH (8);
  else if (d <= 32)
    LAUNCH (32);
  else if (d <= 64)
    LAUNCH (64);
  else
    return cudaErrorInvalidValue;
#undef LAUNCH
  return cudaGetLastError ();
}

extern "C" cudaError_t
ehat_cuda_window_attention (cudaStream_t s, int dt, const void *qkv, int n,
    int h, int w, int c, int heads, int ws, int shift,
    const float *dense_bias, const EhatCudaRelBias *rel, void *out)
{
  cudaError_t e = ehat_cuda_attention_mma (s, dt, qkv, n, h, w, c, heads,
      ws, shift, 0, dense_bias, rel, out);

  if (e != cudaErrorNotSupported)
    return e;
  EHAT_DISPATCH (dt, e = launch<T, false> (s, (const T *) qkv, n, h, w, c,
          heads, ws, shift, ws * ws, dense_bias, rel, (T *) out));
  return e;
}

extern "C" cudaError_t
ehat_cuda_overlap_attention (cudaStream_t s, int dt, const void *qkv,
    int n, int h, int w, int c, int heads, int ws, int wse,
    const float *dense_bias, const EhatCudaRelBias *rel, void *out)
{
  cudaError_t e = ehat_cuda_attention_mma (s, dt, qkv, n, h, w, c, heads,
      ws, wse, 1, dense_bias, rel, out);

  if (e != cudaErrorNotSupported)
    return e;
  EHAT_DISPATCH (dt, e = launch<T, true> (s, (const T *) qkv, n, h, w, c,
          heads, ws, wse, wse * wse, dense_bias, rel, (T *) out));
  return e;
}
