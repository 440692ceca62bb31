/* The CUDA emulator's own semantics (kernels/emu), in plain CUDA.
 *
 * Built twice: by nvcc against the real runtime (suite cuda: on a GPU it
 * shows that what the emulator does is what the hardware does) and through
 * the emulator (suite cuda-emu).  The checks after "emulator only" are
 * things real hardware does not promise to detect — a barrier not every
 * thread reaches, a host read before synchronising, a GEMM outside its
 * allocation — and that the emulator must turn into errors; they run in
 * subprocesses, since such an error ends the (emulated) context.
 *
 * Exit 77 without a device (the real build on a machine without a GPU). */
#include <cuda_runtime.h>
#include <cublas_v2.h>
#include <glib.h>
#include <math.h>
#include <string.h>

#include "ehat-cuda-mma.cuh"

/* out[t] for each of the warp functions, 64 threads (two warps) */
#define NT 64
#define N_SHFL 9

__global__ void
shuffle_kernel (int *out)
{
  int t = threadIdx.x, v = 1000 + t;
  int *o = out + t * N_SHFL;
  o[0] = __shfl_xor_sync (0xffffffffu, v, 1);
  o[1] = __shfl_xor_sync (0xffffffffu, v, 16);
  o[2] = __shfl_down_sync (0xffffffffu, v, 3);
  o[3] = __shfl_up_sync (0xffffffffu, v, 5);
  o[4] = __shfl_sync (0xffffffffu, v, 7);
  o[5] = __shfl_sync (0xffffffffu, v, 3, 8);    /* lane 3 of each 8 */
  o[6] = __shfl_down_sync (0xffffffffu, v, 2, 4);
  o[7] = (int) __ballot_sync (0xffffffffu, t % 3 == 0);
  o[8] = (int) __shfl_xor_sync (0xffffffffu, (double) v + 0.5, 4);
}

/* A block-wide sum through shared memory, __syncthreads and shuffles
 * (the shape of ehat_block_sum), with early-exiting threads. */
__global__ void
reduce_kernel (const float *x, int n, float *sum)
{
  __shared__ float red[32];
  int t = threadIdx.x, lane = t & 31, wid = t >> 5;
  float v = 0.0f;
  for (int i = t; i < n; i += blockDim.x)
    v += x[i];
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync (0xffffffffu, v, o);
  if (lane == 0)
    red[wid] = v;
  __syncthreads ();
  if (wid > 0)
    return;                     /* warps 1.. leave before the last step */
  v = lane < (int) (blockDim.x >> 5) ? red[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync (0xffffffffu, v, o);
  if (lane == 0)
    sum[blockIdx.x] = v;
}

/* ldmatrix .x4 (the fused GEMM's fragment loads, ehat-cuda-mma.cuh) from
 * a table of 32 rows of 8 elements, element (row, col) = 8·row + col;
 * lane t names row (5·t + 3) % 32, so that each lane's address matters. */
__global__ void
ldmatrix_kernel (uint32_t *out)
{
  __shared__ __align__ (16) uint16_t rows[32][8];
  uint32_t r[4];
  int t = threadIdx.x;

  for (int c = 0; c < 8; c++)
    rows[t][c] = (uint16_t) (8 * t + c);
  __syncthreads ();
  ldmatrix_x4 (r, rows[(5 * t + 3) % 32]);
  for (int j = 0; j < 4; j++)
    out[4 * t + j] = r[j];
}

/* Dynamic shared memory, the whole block writing then reading back. */
__global__ void
smem_kernel (int *out, int n)
{
  extern __shared__ int buf[];
  for (int i = threadIdx.x; i < n; i += blockDim.x)
    buf[i] = i * 3;
  __syncthreads ();
  for (int i = threadIdx.x; i < n; i += blockDim.x)
    out[i] = buf[n - 1 - i];
}

/* Every thread but the last waits at a barrier the last one never reaches
 * (undefined behaviour on hardware: a hang or garbage). */
__global__ void
divergent_barrier_kernel (int *out)
{
  if (threadIdx.x + 1 < blockDim.x) {
    __syncthreads ();
    out[threadIdx.x] = 1;
  } else {
    for (int i = 0; i < 4; i++)
      __syncthreads ();
  }
}

/* Lane 0 waits at the barrier, the other lanes at a shuffle that needs
 * lane 0: nothing can go on. */
__global__ void
deadlock_kernel (int *out)
{
  int v = threadIdx.x;
  if (threadIdx.x > 0)
    v = __shfl_xor_sync (0xffffffffu, v, 1);
  __syncthreads ();
  out[threadIdx.x] = v;
}

__global__ void
fill_kernel (float *p, int n, float v)
{
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n;
      i += gridDim.x * blockDim.x)
    p[i] = v;
}

__global__ void
copy_kernel (const float *src, float *dst, int n)
{
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n;
      i += gridDim.x * blockDim.x)
    dst[i] = src[i];
}

#define CHECK(call) g_assert_cmpstr (cudaGetErrorName (call), ==, \
    "cudaSuccess")

static void
test_shuffles (void)
{
  int *d, h[NT * N_SHFL];

  CHECK (cudaMalloc ((void **) &d, sizeof h));
  shuffle_kernel <<< 1, NT >>> (d);
  CHECK (cudaGetLastError ());
  CHECK (cudaMemcpy (h, d, sizeof h, cudaMemcpyDeviceToHost));
  for (int t = 0; t < NT; t++) {
    int l = t % 32, w = t - l, *o = h + t * N_SHFL;
    unsigned ballot = 0;
    for (int j = 0; j < 32; j++)
      ballot |= (unsigned) ((w + j) % 3 == 0) << j;
    g_assert_cmpint (o[0], ==, 1000 + w + (l ^ 1));
    g_assert_cmpint (o[1], ==, 1000 + w + (l ^ 16));
    /* out of range: the caller's own value */
    g_assert_cmpint (o[2], ==, 1000 + w + (l + 3 < 32 ? l + 3 : l));
    g_assert_cmpint (o[3], ==, 1000 + w + (l >= 5 ? l - 5 : l));
    g_assert_cmpint (o[4], ==, 1000 + w + 7);
    g_assert_cmpint (o[5], ==, 1000 + w + (l & ~7) + 3);
    g_assert_cmpint (o[6], ==, 1000 + w + (l % 4 + 2 < 4 ? l + 2 : l));
    g_assert_cmpuint ((unsigned) o[7], ==, ballot);
    g_assert_cmpint (o[8], ==, 1000 + w + (l ^ 4));     /* 8-byte values */
  }
  CHECK (cudaFree (d));
}

static void
test_reduce (void)
{
  const int n = 1000, blocks = 3;
  float *x, *s, hx[1000], hs[3], want = 0.0f;

  for (int i = 0; i < n; i++) {
    hx[i] = (float) (i % 17) - 8.0f;
    want += hx[i];
  }
  CHECK (cudaMalloc ((void **) &x, sizeof hx));
  CHECK (cudaMalloc ((void **) &s, sizeof hs));
  CHECK (cudaMemcpy (x, hx, sizeof hx, cudaMemcpyHostToDevice));
  reduce_kernel <<< blocks, 256 >>> (x, n, s);
  CHECK (cudaGetLastError ());
  CHECK (cudaMemcpy (hs, s, sizeof hs, cudaMemcpyDeviceToHost));
  for (int b = 0; b < blocks; b++)
    g_assert_cmpfloat (hs[b], ==, want);
  CHECK (cudaFree (x));
  CHECK (cudaFree (s));
}

/* Register j of lane l: matrix j's row l / 4 (given by lane 8·j + l / 4),
 * columns 2·(l % 4) and the next, the first in the low half. */
static void
test_ldmatrix (void)
{
  uint32_t *d, h[32 * 4];
  int dev = 0, major = 0;

  CHECK (cudaGetDevice (&dev));
  CHECK (cudaDeviceGetAttribute (&major, cudaDevAttrComputeCapabilityMajor,
          dev));
  if (major < 8) {
    g_test_skip ("the mma helpers are for compute capability 8.0 and newer");
    return;
  }
  CHECK (cudaMalloc ((void **) &d, sizeof h));
  ldmatrix_kernel <<< 1, 32 >>> (d);
  CHECK (cudaGetLastError ());
  CHECK (cudaMemcpy (h, d, sizeof h, cudaMemcpyDeviceToHost));
  for (int l = 0; l < 32; l++)
    for (int j = 0; j < 4; j++) {
      unsigned row = (5 * (8 * j + l / 4) + 3) % 32, e = 8 * row + 2 * (l % 4);
      g_assert_cmphex (h[4 * l + j], ==, e | (e + 1) << 16);
    }
  CHECK (cudaFree (d));
}

static void
test_dynamic_smem (void)
{
  /* 60 000 bytes: over the 48 KiB default, under sm_75's 64 KiB */
  const int n = 15000;
  int *d, *h = g_new (int, n);

  CHECK (cudaMalloc ((void **) &d, n * sizeof (int)));
  smem_kernel <<< 1, 128, n * sizeof (int) >>> (d, n);
  g_assert_cmpstr (cudaGetErrorName (cudaGetLastError ()), !=,
      "cudaSuccess");
  CHECK (cudaFuncSetAttribute (smem_kernel,
          cudaFuncAttributeMaxDynamicSharedMemorySize, n * sizeof (int)));
  smem_kernel <<< 1, 128, n * sizeof (int) >>> (d, n);
  CHECK (cudaGetLastError ());
  CHECK (cudaMemcpy (h, d, n * sizeof (int), cudaMemcpyDeviceToHost));
  for (int i = 0; i < n; i++)
    g_assert_cmpint (h[i], ==, (n - 1 - i) * 3);
  CHECK (cudaFree (d));
  g_free (h);
}

static void
test_launch_limits (void)
{
  float *d;
  CHECK (cudaMalloc ((void **) &d, 4));
  fill_kernel <<< 1, 1025 >>> (d, 1, 0.0f);
  g_assert_cmpstr (cudaGetErrorName (cudaGetLastError ()), ==,
      "cudaErrorInvalidConfiguration");
  fill_kernel <<< dim3 (1, 65536), 32 >>> (d, 1, 0.0f);
  g_assert_cmpstr (cudaGetErrorName (cudaGetLastError ()), ==,
      "cudaErrorInvalidConfiguration");
  fill_kernel <<< 1, 32 >>> (d, 1, 2.0f);       /* and the device still works */
  CHECK (cudaGetLastError ());
  CHECK (cudaDeviceSynchronize ());
  CHECK (cudaFree (d));
}

#ifdef EHAT_CUDA_EMU
/* ---- emulator only ---- */

static void
test_emu_poison (void)
{
  unsigned char *d, h[64];
  CHECK (cudaMalloc ((void **) &d, sizeof h));
  CHECK (cudaMemcpy (h, d, sizeof h, cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < sizeof h; i++)
    g_assert_cmpuint (h[i], ==, 0xff);          /* NaN as floats */
  CHECK (cudaFree (d));
}

/* A stale device pointer reads NaN, not the next owner's data: freed
 * blocks are poisoned and held back (under ASan, ASan's quarantine reports
 * the access instead, so that half is not run there); a copy through it is
 * refused.  Page-locked memory starts as NaN too. */
static void
test_emu_stale (void)
{
  float *d, *next, *out, h[256], *pinned;

  CHECK (cudaMalloc ((void **) &d, sizeof h));
  CHECK (cudaMalloc ((void **) &out, sizeof h));
  fill_kernel <<< 2, 64 >>> (d, 256, 7.0f);
  CHECK (cudaFree (d));
  CHECK (cudaMalloc ((void **) &next, sizeof h));
  g_assert_true (next != d);    /* not handed out again at once */
  fill_kernel <<< 2, 64 >>> (next, 256, 3.0f);
#ifndef __SANITIZE_ADDRESS__
  copy_kernel <<< 2, 64 >>> (d, out, 256);
  CHECK (cudaMemcpy (h, out, sizeof h, cudaMemcpyDeviceToHost));
  for (int i = 0; i < 256; i++)
    g_assert_true (isnan (h[i]));
#endif
  g_assert_cmpstr (cudaGetErrorName (cudaMemcpy (h, d, sizeof h,
              cudaMemcpyDeviceToHost)), ==, "cudaErrorInvalidValue");
  CHECK (cudaMallocHost ((void **) &pinned, sizeof h));
  for (int i = 0; i < 256; i++)
    g_assert_true (isnan (pinned[i]));
  CHECK (cudaFreeHost (pinned));
  CHECK (cudaFree (next));
  CHECK (cudaFree (out));
}

static void
test_emu_deferred (void)
{
  float *d, *pinned;
  cudaStream_t s;

  CHECK (cudaStreamCreateWithFlags (&s, cudaStreamNonBlocking));
  CHECK (cudaMalloc ((void **) &d, 256 * sizeof (float)));
  CHECK (cudaMallocHost ((void **) &pinned, 256 * sizeof (float)));
  pinned[0] = -1.0f;
  fill_kernel <<< 2, 64, 0, s >>> (d, 256, 7.0f);
  CHECK (cudaMemcpyAsync (pinned, d, 256 * sizeof (float),
          cudaMemcpyDeviceToHost, s));
  /* queued, not done: a host that reads now reads what was there */
  g_assert_cmpfloat (pinned[0], ==, -1.0f);
  CHECK (cudaStreamSynchronize (s));
  for (int i = 0; i < 256; i++)
    g_assert_cmpfloat (pinned[i], ==, 7.0f);
  CHECK (cudaFreeHost (pinned));
  CHECK (cudaFree (d));
  CHECK (cudaStreamDestroy (s));
}

static void
test_emu_memory_limit (void)
{
  size_t fr, total;
  void *p;
  CHECK (cudaMemGetInfo (&fr, &total));
  g_assert_cmpstr (cudaGetErrorName (cudaMalloc (&p, fr + 1)), ==,
      "cudaErrorMemoryAllocation");
  g_assert_cmpstr (cudaGetErrorName (cudaFree ((char *) &fr)), ==,
      "cudaErrorInvalidValue");
}

static void
divergent_barrier_child (void)
{
  int *d;
  CHECK (cudaMalloc ((void **) &d, 64 * sizeof (int)));
  divergent_barrier_kernel <<< 1, 64 >>> (d);
  CHECK (cudaGetLastError ());                   /* the launch itself is fine */
  g_assert_cmpstr (cudaGetErrorName (cudaDeviceSynchronize ()), ==,
      "cudaErrorLaunchFailure");
  /* the context is gone: everything after fails too */
  g_assert_cmpstr (cudaGetErrorName (cudaMalloc ((void **) &d, 4)), ==,
      "cudaErrorLaunchFailure");
}

static void
deadlock_child (void)
{
  int *d;
  CHECK (cudaMalloc ((void **) &d, 32 * sizeof (int)));
  deadlock_kernel <<< 1, 32 >>> (d);
  g_assert_cmpstr (cudaGetErrorName (cudaDeviceSynchronize ()), ==,
      "cudaErrorLaunchFailure");
}

static void
gemm_outside_child (void)
{
  cublasHandle_t h;
  float *a, *c, one = 1.0f, zero = 0.0f;
  CHECK (cudaMalloc ((void **) &a, 16 * 16 * sizeof (float)));
  CHECK (cudaMalloc ((void **) &c, 16 * 15 * sizeof (float)));  /* short */
  g_assert_cmpint (cublasCreate (&h), ==, CUBLAS_STATUS_SUCCESS);
  g_assert_cmpint (cublasGemmEx (h, CUBLAS_OP_N, CUBLAS_OP_N, 16, 16, 16,
          &one, a, CUDA_R_32F, 16, a, CUDA_R_32F, 16, &zero, c, CUDA_R_32F,
          16, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT), ==,
      CUBLAS_STATUS_SUCCESS);
  g_assert_cmpstr (cudaGetErrorName (cudaDeviceSynchronize ()), ==,
      "cudaErrorIllegalAddress");
  cublasDestroy (h);
}

static void
test_emu_errors (gconstpointer data)
{
  const char *what = (const char *) data;
  if (g_test_subprocess ()) {
    if (!strcmp (what, "barrier"))
      divergent_barrier_child ();
    else if (!strcmp (what, "deadlock"))
      deadlock_child ();
    else
      gemm_outside_child ();
    return;
  }
  g_test_trap_subprocess (NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
  g_test_trap_assert_passed ();
  /* and the emulator said what went wrong */
  g_test_trap_assert_stderr (!strcmp (what, "barrier")
      ? "*divergent_barrier_kernel*different __syncthreads*"
      : !strcmp (what, "deadlock")
      ? "*deadlock_kernel*deadlocked: 1 threads wait at __syncthreads, "
      "31 at a warp collective*"
      : "*cublasGemmEx C*not inside one allocation*");
}
#endif

int
main (int argc, char **argv)
{
  int n = 0;
  g_test_init (&argc, &argv, NULL);
  if (cudaGetDeviceCount (&n) != cudaSuccess || n < 1) {
    g_printerr ("SKIP: no CUDA device\n");
    return 77;
  }
  g_test_add_func ("/cuda-emu/shuffles", test_shuffles);
  g_test_add_func ("/cuda-emu/reduce", test_reduce);
  g_test_add_func ("/cuda-emu/ldmatrix", test_ldmatrix);
  g_test_add_func ("/cuda-emu/dynamic-shared-memory", test_dynamic_smem);
  g_test_add_func ("/cuda-emu/launch-limits", test_launch_limits);
#ifdef EHAT_CUDA_EMU
  g_test_add_func ("/cuda-emu/emulator/poison", test_emu_poison);
  g_test_add_func ("/cuda-emu/emulator/stale", test_emu_stale);
  g_test_add_func ("/cuda-emu/emulator/deferred", test_emu_deferred);
  g_test_add_func ("/cuda-emu/emulator/memory-limit", test_emu_memory_limit);
  g_test_add_data_func ("/cuda-emu/emulator/divergent-barrier", "barrier",
      test_emu_errors);
  g_test_add_data_func ("/cuda-emu/emulator/deadlock", "deadlock",
      test_emu_errors);
  g_test_add_data_func ("/cuda-emu/emulator/gemm-outside", "gemm",
      test_emu_errors);
#endif
  return g_test_run ();
}
