/* Tensor-core helpers shared by the mma.sync kernels (window attention,
 * fused GEMM): fp16/bf16 pairs packed into 32-bit registers, mma.m16n8k16
 * with fp32 accumulators, ldmatrix and cp.async.  Overloads take a null T*
 * to pick the element type.  Under the CUDA emulator (kernels/emu)
 * mma.sync and ldmatrix are the emulator's, which follow the PTX ISA
 * fragment layouts. */
#ifndef EHAT_CUDA_MMA_CUH
#define EHAT_CUDA_MMA_CUH

#include "ehat-cuda-common.cuh"

#include <stdint.h>

/* Two floats → one 32-bit register of two T (low half first). */
__device__ __forceinline__ uint32_t
pack2 (float a, float b, __half *)
{
  __half2 h = __floats2half2_rn (a, b);
  return *(uint32_t *) &h;
}

__device__ __forceinline__ uint32_t
pack2 (float a, float b, __nv_bfloat16 *)
{
  __nv_bfloat162 h = __floats2bfloat162_rn (a, b);
  return *(uint32_t *) &h;
}

/* d += a·b, m16n8k16, fp32 accumulators. */
__device__ __forceinline__ void
mma16816 (float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1,
    __half *)
{
#if __CUDA_ARCH__ >= 800
  asm volatile ("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f" (d[0]), "+f" (d[1]), "+f" (d[2]), "+f" (d[3])
      : "r" (a[0]), "r" (a[1]), "r" (a[2]), "r" (a[3]), "r" (b0), "r" (b1));
#elif defined (EHAT_CUDA_EMU)
  ehat_emu_mma_m16n8k16 (d, a, b0, b1, 0);
#endif
}

__device__ __forceinline__ void
mma16816 (float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1,
    __nv_bfloat16 *)
{
#if __CUDA_ARCH__ >= 800
  asm volatile ("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f" (d[0]), "+f" (d[1]), "+f" (d[2]), "+f" (d[3])
      : "r" (a[0]), "r" (a[1]), "r" (a[2]), "r" (a[3]), "r" (b0), "r" (b1));
#elif defined (EHAT_CUDA_EMU)
  ehat_emu_mma_m16n8k16 (d, a, b0, b1, 1);
#endif
}

/* Four 8×8 matrices of 16-bit elements from shared memory into mma
 * fragments in one instruction (ldmatrix .x4): lane 8·j + i gives the
 * address of row i of matrix j (16 bytes, 16-byte aligned), and r[j] of
 * lane l receives matrix j's (row l / 4, cols 2·(l % 4) + {0, 1}), which
 * is the layout of an mma.m16n8k16 A or B register.  All 32 lanes. */
__device__ __forceinline__ void
ldmatrix_x4 (uint32_t r[4], const void *row)
{
#if __CUDA_ARCH__ >= 800
  unsigned a = (unsigned) __cvta_generic_to_shared (row);
  asm volatile ("ldmatrix.sync.aligned.m8n8.x4.shared.b16 "
      "{%0,%1,%2,%3}, [%4];\n"
      : "=r" (r[0]), "=r" (r[1]), "=r" (r[2]), "=r" (r[3]) : "r" (a));
#elif defined (EHAT_CUDA_EMU)
  ehat_emu_ldmatrix_x4 (r, row);
#else
  r[0] = r[1] = r[2] = r[3] = 0;        /* no mma kernel runs below 8.0 */
#endif
}

/* Global → shared copies of 2 to 16 bytes, asynchronous on compute
 * capability 8.0 and newer (cp.async, .ca so that neighbouring taps'
 * reloads hit L1; zero-filled when !pred, reading nothing); elsewhere (and
 * on the emulator) a plain copy, which only delivers earlier than the
 * pipeline waits for it.  src must be a valid address even when !pred. */
template <typename V>
__device__ __forceinline__ void
copy_async (V *dst, const V *src, bool pred)
{
#if __CUDA_ARCH__ >= 800
  if constexpr (sizeof (V) >= 4) {
    unsigned d = (unsigned) __cvta_generic_to_shared (dst);
    asm volatile ("cp.async.ca.shared.global [%0], [%1], %2, %3;\n"
        :: "r" (d), "l" (src), "n" ((int) sizeof (V)),
        "r" (pred ? (int) sizeof (V) : 0));
    return;
  }
#endif
  *dst = pred ? *src : V {};
}

/* Closes the group of copies issued since the last commit. */
__device__ __forceinline__ void
copy_async_commit (void)
{
#if __CUDA_ARCH__ >= 800
  asm volatile ("cp.async.commit_group;\n"::);
#endif
}

/* Waits until at most N committed groups are still in flight (this
 * thread's copies; a __syncthreads() then shows everyone's). */
template <int N>
__device__ __forceinline__ void
copy_async_wait (void)
{
#if __CUDA_ARCH__ >= 800
  asm volatile ("cp.async.wait_group %0;\n"::"n" (N));
#endif
}

/* Whether the current device can run mma.sync kernels (compute capability
 * 8.0 or newer: the sm_75 build has no bf16 mma and its fp16 mma is a
 * different shape). */
static inline bool
ehat_cuda_have_mma (void)
{
  int dev = 0, major = 0;
  if (cudaGetDevice (&dev) != cudaSuccess
      || cudaDeviceGetAttribute (&major, cudaDevAttrComputeCapabilityMajor,
          dev) != cudaSuccess) {
    (void) cudaGetLastError ();
    return false;
  }
  return major >= 8;
}

#endif /* EHAT_CUDA_MMA_CUH */
