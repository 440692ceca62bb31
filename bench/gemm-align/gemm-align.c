/* cuBLAS fp16 GEMMs at HAT-L's shapes (480×272 tokens, im2col bands of
 * 40000 pixels) as they are and zero-padded to multiples of 8: why the
 * CUDA backend pads GEMM operands (docs/performance.md).  Standalone, not
 * built by meson (it needs a GPU to say anything):
 *
 *   gcc -O2 bench/gemm-align/gemm-align.c -I/usr/local/cuda/include \
 *       -L/usr/local/cuda/lib64 -lcublas -lcudart -o gemm-align
 *   ./gemm-align      # mean of 20 products after 3, on zeros */
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdio.h>
static void run(cublasHandle_t h, int m, int n, int k, int lda, int ldb, int ldc, const char *what) {
  void *A, *B, *C; float one = 1, zero = 0; cudaEvent_t e0, e1; float ms;
  cudaMalloc(&A, (size_t) lda * m * 2 + 64); cudaMalloc(&B, (size_t) ldb * n * 2 + 64); cudaMalloc(&C, (size_t) ldc * n * 2 + 64);
  cudaMemset(A, 0, (size_t) lda * m * 2); cudaMemset(B, 0, (size_t) ldb * n * 2);
  cudaEventCreate(&e0); cudaEventCreate(&e1);
  for (int i = 0; i < 3; i++) cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, A, CUDA_R_16F, lda, B, CUDA_R_16F, ldb, &zero, C, CUDA_R_16F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  cudaEventRecord(e0, 0);
  for (int i = 0; i < 20; i++) cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, A, CUDA_R_16F, lda, B, CUDA_R_16F, ldb, &zero, C, CUDA_R_16F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  cudaEventRecord(e1, 0); cudaEventSynchronize(e1); cudaEventElapsedTime(&ms, e0, e1); ms /= 20;
  printf("%-28s m=%5d n=%6d k=%5d ld=%5d/%5d/%5d  %8.3f ms  %6.1f TFLOP/s\n", what, m, n, k, lda, ldb, ldc, ms, 2.0 * m * n * k / ms / 1e9);
  cudaFree(A); cudaFree(B); cudaFree(C);
}
int main(void) {
  cublasHandle_t h; cublasCreate(&h);
  int N = 130560;
  run(h, 540, N, 180, 180, 180, 540, "qkv 180->540");
  run(h, 544, N, 184, 184, 184, 544, "qkv padded 184->544");
  run(h, 360, N, 180, 180, 180, 360, "fc1 180->360");
  run(h, 360, N, 184, 184, 184, 360, "fc1 padded");
  run(h, 180, N, 360, 360, 360, 180, "fc2 360->180");
  run(h, 184, N, 360, 360, 360, 184, "fc2 padded");
  /* conv as GEMM: C[cout][np] = W[cout][kc] (stored kc x cout, op N) x col */
  run(h, 60, 40000, 1620, 1620, 1620, 60, "cab conv1 (as T) 1620->60");
  run(h, 64, 40000, 1624, 1624, 1624, 64, "cab conv1 padded");
  run(h, 180, 40000, 540, 540, 540, 180, "cab conv2 540->180");
  run(h, 184, 40000, 544, 544, 544, 184, "cab conv2 padded");
  run(h, 180, 40000, 1620, 1620, 1620, 180, "group conv 1620->180");
  run(h, 184, 40000, 1624, 1624, 1624, 184, "group conv padded");
  return 0;
}
