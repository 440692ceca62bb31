/* Helpers shared by the .cu files of the CUDA backend. */
#ifndef EHAT_CUDA_COMMON_CUH
#define EHAT_CUDA_COMMON_CUH

#include "ehat-cuda.h"

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <math.h>

/* ---- storage types (EhatCudaDtype) ----
 * Activations are stored as T (float, __half or __nv_bfloat16) and every
 * kernel computes in fp32: ld() widens, st() rounds to nearest even. */
template <typename T> __device__ __forceinline__ float ld (const T *p);
template <> __device__ __forceinline__ float
ld<float> (const float *p)
{
  return *p;
}

template <> __device__ __forceinline__ float
ld<__half> (const __half *p)
{
  return __half2float (*p);
}

template <> __device__ __forceinline__ float
ld<__nv_bfloat16> (const __nv_bfloat16 *p)
{
  return __bfloat162float (*p);
}

__device__ __forceinline__ void
st (float *p, float v)
{
  *p = v;
}

__device__ __forceinline__ void
st (__half *p, float v)
{
  *p = __float2half_rn (v);
}

__device__ __forceinline__ void
st (__nv_bfloat16 *p, float v)
{
  *p = __float2bfloat16_rn (v);
}

/* Runs the statement list with T bound to the storage type of dt. */
#define EHAT_DISPATCH(dt, ...) \
  switch (dt) { \
    case EHAT_CUDA_F16: { typedef __half T; __VA_ARGS__; } break; \
    case EHAT_CUDA_BF16: { typedef __nv_bfloat16 T; __VA_ARGS__; } break; \
    default: { typedef float T; __VA_ARGS__; } break; \
  }

#define EHAT_THREADS 256

/* Blocks for a grid-stride loop over n elements. */
static inline unsigned
ehat_blocks (size_t n)
{
  size_t b = (n + EHAT_THREADS - 1) / EHAT_THREADS;
  if (b < 1)
    b = 1;
  return (unsigned) (b < (1u << 20) ? b : (1u << 20));
}

#define GRID_STRIDE(i, n) \
  for (size_t i = (size_t) blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
      i += (size_t) gridDim.x * blockDim.x)

/* PyTorch 'reflect', extended periodically (EHAT-SPEC.md §1). */
__device__ __forceinline__ int
ehat_dev_reflect (int i, int n)
{
  if (n == 1)
    return 0;
  int p = 2 * (n - 1);
  i %= p;
  if (i < 0)
    i += p;
  return i < n ? i : p - i;
}

/* Exact (erf) GELU, as the CPU's ehat_gelu (CUDA's erff: ≤ 2 ulp). */
__device__ __forceinline__ float
ehat_dev_gelu (float x)
{
  return 0.5f * x * (1.0f + erff (x * 0.70710678118654752f));
}

__device__ __forceinline__ float
ehat_dev_act (float v, int act)
{
  switch (act) {
    case EHAT_CUDA_ACT_GELU:
      return ehat_dev_gelu (v);
    case EHAT_CUDA_ACT_RELU:
      return v > 0.0f ? v : 0.0f;
    case EHAT_CUDA_ACT_LRELU:
      return v > 0.0f ? v : 0.01f * v;
    default:
      return v;
  }
}

__device__ __forceinline__ float
ehat_warp_sum (float v)
{
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync (0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float
ehat_warp_max (float v)
{
  for (int o = 16; o > 0; o >>= 1)
    v = fmaxf (v, __shfl_xor_sync (0xffffffffu, v, o));
  return v;
}

/* Block-wide reductions (blockDim.x a multiple of 32, ≤ 1024); every
 * thread gets the result.  `red` is shared scratch of 32 floats. */
__device__ __forceinline__ float
ehat_block_sum (float v, float *red)
{
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  int nw = blockDim.x >> 5;
  v = ehat_warp_sum (v);
  __syncthreads ();
  if (lane == 0)
    red[wid] = v;
  __syncthreads ();
  v = lane < nw ? red[lane] : 0.0f;
  return ehat_warp_sum (v);
}

__device__ __forceinline__ float
ehat_block_max (float v, float *red)
{
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  int nw = blockDim.x >> 5;
  v = ehat_warp_max (v);
  __syncthreads ();
  if (lane == 0)
    red[wid] = v;
  __syncthreads ();
  v = lane < nw ? red[lane] : -INFINITY;
  return ehat_warp_max (v);
}

#endif /* EHAT_CUDA_COMMON_CUH */
