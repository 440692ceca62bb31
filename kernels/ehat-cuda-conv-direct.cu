/* Convolutions with at most 8 outputs (HAT's last convolution, 64 → 3 at
 * the output resolution; HAT-S's channel-attention squeeze, 144 → 6) as a
 * direct kernel: a thread per output pixel, all of its outputs in
 * registers, the weights in shared memory.  A GEMM would pad these
 * outputs to a tile of 64 (the fused kernel) or to 8 after an im2col band
 * nine times the input (cuBLAS): at the output resolution of a ×4 model
 * that band is 2.4 GB a 1080p frame, written and read back for 3 numbers a
 * pixel.  Here the input is read once per tap, as 16-byte vectors when
 * the channels allow it (through L1: neighbouring threads share taps),
 * and the sums are fp32 in every storage type, rounded once on store. */
#include "ehat-cuda-common.cuh"

/* VEC: input elements per load (16 bytes, or 1); CO: outputs computed,
 * ≥ cout (the weights of the others are zero) */
template <typename T, int VEC, int CO>
__global__ void __launch_bounds__ (EHAT_THREADS)
conv_direct_kernel (const T *__restrict__ x, size_t rows, int h, int w,
    int cin, int k, const T *__restrict__ wt, int ldw, int co_major,
    int cout, const float *__restrict__ b, int act, const T *res,
    float alpha, T *y)
{
  extern __shared__ float wsm[];        /* [CO][k·k·cin] */
  const int kc = k * k * cin;

  for (int i = threadIdx.x; i < CO * kc; i += blockDim.x) {
    int co = i / kc, kk = i - co * kc;
    wsm[i] = co < cout ? ld (wt + (co_major ? (size_t) co * ldw + kk
            : (size_t) kk * ldw + co)) : 0.0f;
  }
  __syncthreads ();

  const size_t p = (size_t) blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= rows)
    return;
  const size_t q = p / (size_t) w;
  const int px = (int) (p - q * w), py = (int) (q % (size_t) h);
  const int r = (k - 1) / 2;
  float acc[CO];
#pragma unroll
  for (int co = 0; co < CO; co++)
    acc[co] = 0.0f;

  for (int ky = 0; ky < k; ky++) {
    int sy = py + ky - r;
    if (sy < 0 || sy >= h)
      continue;
    for (int kx = 0; kx < k; kx++) {
      int sx = px + kx - r;
      if (sx < 0 || sx >= w)
        continue;
      /* the same image: the source pixel is p moved by (ky−r, kx−r) */
      const T *xp = x + (size_t) ((long long) p + (long long) (ky - r) * w
          + (kx - r)) * cin;
      const float *wp = wsm + (ky * k + kx) * cin;
      for (int ci = 0; ci < cin; ci += VEC) {
        float xv[VEC];
        if (VEC > 1) {
          /* 16 bytes: VEC elements of T */
          uint4 u = *(const uint4 *) (xp + ci);
          const T *e = (const T *) &u;
#pragma unroll
          for (int v = 0; v < VEC; v++)
            xv[v] = ld (e + v);
        } else {
          xv[0] = ld (xp + ci);
        }
#pragma unroll
        for (int v = 0; v < VEC; v++)
#pragma unroll
          for (int co = 0; co < CO; co++)
            acc[co] = fmaf (xv[v], wp[co * kc + ci + v], acc[co]);
      }
    }
  }
#pragma unroll
  for (int co = 0; co < CO; co++)
    if (co < cout) {
      float v = ehat_dev_act (acc[co] + (b ? b[co] : 0.0f), act);
      /* res may be y: this thread reads the element before writing it */
      if (res)
        v += alpha * ld (res + p * cout + co);
      st (y + p * cout + co, v);
    }
}

template <typename T, int CO>
static cudaError_t
launch (cudaStream_t s, const EhatCudaConvDirect *c, size_t smem)
{
  size_t blocks = (c->rows + EHAT_THREADS - 1) / EHAT_THREADS;
  /* 16-byte loads when every pixel's channel run starts 16-byte aligned */
  bool vec = (c->cin * sizeof (T)) % 16 == 0 && (uintptr_t) c->x % 16 == 0;

#define LAUNCH(V) conv_direct_kernel<T, V, CO> <<< (unsigned) blocks, \
      EHAT_THREADS, smem, s >>> ((const T *) c->x, c->rows, c->h, c->w, \
      c->cin, c->k, (const T *) c->wt, c->ldw, c->co_major, c->cout, c->b, \
      c->act, (const T *) c->res, c->alpha, (T *) c->y)
  if (vec)
    LAUNCH (16 / sizeof (T));
  else
    LAUNCH (1);
#undef LAUNCH
  return cudaGetLastError ();
}

extern "C" cudaError_t
ehat_cuda_conv_direct (cudaStream_t s, int dt, const EhatCudaConvDirect *c)
{
  /* outputs computed (the kernel's CO): 4 or 8 */
  int co = c->cout <= 4 ? 4 : 8;
  size_t smem;

  if (c->cout < 1 || c->cout > EHAT_CUDA_DIRECT_MAX_OUT
      || (c->k != 1 && c->k != 3) || c->cin < 1 || c->h < 1 || c->w < 1)
    return cudaErrorNotSupported;
  smem = (size_t) co * c->k * c->k * c->cin * sizeof (float);
  if (smem > EHAT_CUDA_DIRECT_MAX_SMEM)
    return cudaErrorNotSupported;
  if (c->rows == 0)
    return cudaSuccess;
  if ((c->rows + EHAT_THREADS - 1) / EHAT_THREADS > 0x7fffffffu)
    return cudaErrorInvalidValue;
  cudaError_t e = cudaSuccess;
  if (co == 4)
    EHAT_DISPATCH (dt, e = launch<T, 4> (s, c, smem))
  else
    EHAT_DISPATCH (dt, e = launch<T, 8> (s, c, smem))
  return e;
}
