/* The CUDA emulator's device-side prelude: force-included (g++ -include)
 * before every kernel source when the .cu files are compiled as plain C++
 * for the emulated backend (kernels/emu/meson.build, docs in
 * kernels/emu/README.md).
 *
 * The kernels stay as they are; this header gives their CUDA C++ a CPU
 * meaning: every thread of a block is a fiber of ehat-cuda-emu.cc, so
 * threadIdx & co. name the running fiber's coordinates, __shared__ locals
 * are static (the blocks of a grid run one after another), and
 * __syncthreads(), warp shuffles and mma.sync are rendezvous of those
 * fibers.  Launches (`k<<<g, b, smem, s>>>(args)`) are rewritten by
 * ehat-cuda-emu-rewrite.py into ehat_emu::launch(), which queues them on the
 * emulated stream. */
#ifndef EHAT_CUDA_EMU_H
#define EHAT_CUDA_EMU_H

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#define EHAT_CUDA_EMU 1

/* the real headers gave these compiler attributes; here they are nothing */
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __forceinline__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
/* one block runs at a time, so a static local is that block's shared
 * memory (ehat-cuda-emu.cc fills it with NaN before each block) */
#define __shared__ static

extern "C" {
/* coordinates of the running fiber */
typedef struct
{
  uint3 thread, block;
  dim3 block_dim, grid_dim;
} EhatEmuCoords;

const EhatEmuCoords *ehat_emu_coords (void);
void ehat_emu_syncthreads (const char *file, int line);
void ehat_emu_syncwarp (unsigned mask);
/* lane `src` (as the mode computes it from the caller's lane) of the
 * participating lanes' 8-byte values */
enum
{ EHAT_EMU_SHFL_IDX, EHAT_EMU_SHFL_XOR, EHAT_EMU_SHFL_DOWN, EHAT_EMU_SHFL_UP };
uint64_t ehat_emu_shfl (unsigned mask, uint64_t v, int mode, int arg,
    int width);
unsigned ehat_emu_ballot (unsigned mask, int pred);
/* mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}: d += a·b over the warp,
 * fragments laid out as the PTX ISA specifies */
void ehat_emu_mma_m16n8k16 (float d[4], const uint32_t a[4], uint32_t b0,
    uint32_t b1, int bf16);
/* ldmatrix.sync.aligned.m8n8.x4.shared.b16: each lane gives one 16-byte
 * row; lane l gets (row l / 4, cols 2·(l % 4) + {0, 1}) of each matrix */
void ehat_emu_ldmatrix_x4 (uint32_t r[4], const void *row);
void *ehat_emu_dynamic_smem (void);
/* queues a launch: `run` is called once per thread, in its fiber */
void ehat_emu_launch (const char *name, const void *func, dim3 grid,
    dim3 block, size_t smem, cudaStream_t s, void (*run) (void *),
    void *arg, void (*drop) (void *));
}

#define threadIdx (ehat_emu_coords ()->thread)
#define blockIdx (ehat_emu_coords ()->block)
#define blockDim (ehat_emu_coords ()->block_dim)
#define gridDim (ehat_emu_coords ()->grid_dim)
#define warpSize 32

/* where each thread waits: threads of a block that meet at different
 * __syncthreads() calls are divergent code, reported as a failed launch */
#define __syncthreads() ehat_emu_syncthreads (__FILE__, __LINE__)

static inline void
__syncwarp (unsigned mask = 0xffffffffu)
{
  ehat_emu_syncwarp (mask);
}

namespace ehat_emu
{
  template <typename T> static inline T
  shfl (unsigned mask, T v, int mode, int arg, int width)
  {
    static_assert (sizeof (T) <= 8, "shuffle of more than 8 bytes");
    uint64_t in = 0, out;
    T r;
    memcpy (&in, &v, sizeof v);
    out = ehat_emu_shfl (mask, in, mode, arg, width);
    memcpy (&r, &out, sizeof r);
    return r;
  }

  template <typename F, typename... P> struct Call
  {
    F f;
    std::tuple<P...> args;
  };

  template <typename C> static void
  run (void *p)
  {
    C *c = (C *) p;
    std::apply (c->f, c->args);
  }

  template <typename C> static void
  drop (void *p)
  {
    delete (C *) p;
  }

  /* kernel(args) converted to the kernel's parameter types now (as a real
   * launch copies them), run later by each thread of the grid */
  template <typename... P, typename... A> static inline void
  launch (const char *name, void (*k) (P...), dim3 grid, dim3 block,
      size_t smem, cudaStream_t s, A &&... a)
  {
    typedef Call<void (*) (P...), std::decay_t<P>...> C;
    C *c = new C { k, std::tuple<std::decay_t<P>...> (std::forward<A> (a)...) };
    ehat_emu_launch (name, (const void *) k, grid, block, smem, s, run<C>, c,
        drop<C>);
  }
}

template <typename T> static inline T
__shfl_sync (unsigned m, T v, int lane, int width = 32)
{
  return ehat_emu::shfl (m, v, EHAT_EMU_SHFL_IDX, lane, width);
}

template <typename T> static inline T
__shfl_xor_sync (unsigned m, T v, int lane_mask, int width = 32)
{
  return ehat_emu::shfl (m, v, EHAT_EMU_SHFL_XOR, lane_mask, width);
}

template <typename T> static inline T
__shfl_down_sync (unsigned m, T v, unsigned delta, int width = 32)
{
  return ehat_emu::shfl (m, v, EHAT_EMU_SHFL_DOWN, (int) delta, width);
}

template <typename T> static inline T
__shfl_up_sync (unsigned m, T v, unsigned delta, int width = 32)
{
  return ehat_emu::shfl (m, v, EHAT_EMU_SHFL_UP, (int) delta, width);
}

static inline unsigned
__ballot_sync (unsigned m, int pred)
{
  return ehat_emu_ballot (m, pred);
}

/* Fibers of one block never run at the same time: read-modify-write is
 * atomic by construction. */
template <typename T> static inline T
atomicAdd (T *p, T v)
{
  T old = *p;
  *p = old + v;
  return old;
}

template <typename T> static inline T
atomicMax (T *p, T v)
{
  T old = *p;
  *p = old > v ? old : v;
  return old;
}

/* CUDA's min/max overloads over mixed integer and float types */
template <typename A, typename B> static inline auto
min (A a, B b) -> typename std::common_type<A, B>::type
{
  return a < b ? a : b;
}

template <typename A, typename B> static inline auto
max (A a, B b) -> typename std::common_type<A, B>::type
{
  return a < b ? b : a;
}

/* nvcc's template overload (cuda_runtime.h has it only for nvcc) */
template <typename T> static inline cudaError_t
cudaFuncSetAttribute (T *entry, cudaFuncAttribute attr, int value)
{
  return cudaFuncSetAttribute (reinterpret_cast<const void *> (entry), attr,
      value);
}

template <typename T> static inline T
__ldg (const T *p)
{
  return *p;
}

inline float
__expf (float x)
{
  return expf (x);
}

inline float
__fdividef (float a, float b)
{
  return a / b;
}

inline float
rsqrtf (float x)
{
  return 1.0f / sqrtf (x);
}

inline float
__saturatef (float x)
{
  return x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x;
}

#endif /* EHAT_CUDA_EMU_H */
