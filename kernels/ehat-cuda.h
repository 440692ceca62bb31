/* The CUDA kernels behind a small C interface (internal to the CUDA backend,
 * kernels/ehat-cuda-backend.c).
 *
 * Every launcher enqueues its kernel(s) on `s` and returns the launch status
 * (cudaGetLastError()); execution errors surface later, at the backend's
 * sync.  Layout as in ehat-backend.h: feature maps are NHWC, "tokens ×
 * channels" rows of floats.  All sizes in elements.
 *
 * Precision: everything here is fp32 for now.  Reduced precisions will add
 * launchers with a storage type argument (activations in fp16/bf16, fp32
 * accumulation), not change these. */
#ifndef EHAT_CUDA_H
#define EHAT_CUDA_H

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Activation codes: the values of EhatAct (ehat-backend.h). */
enum
{
  EHAT_CUDA_ACT_NONE = 0,
  EHAT_CUDA_ACT_GELU = 1,
  EHAT_CUDA_ACT_RELU = 2,
  EHAT_CUDA_ACT_LRELU = 3,
};

/* ---- ehat-cuda-elementwise.cu ---- */

/* planar n×3×h×w (device) → NHWC n×H×W×3, reflect padding (periodic
 * mirror), (v − mean)·range. */
cudaError_t ehat_cuda_input (cudaStream_t s, const float *planar, int n,
    int w, int h, int W, int H, float m0, float m1, float m2, float range,
    float *x);
/* NHWC n×H×W×3 → planar n×3×h×w (crop), v/range + mean. */
cudaError_t ehat_cuda_output (cudaStream_t s, const float *x, int n, int W,
    int H, int w, int h, float m0, float m1, float m2, float range,
    float *planar);

/* Pixels [p0, p0 + np) of the n·h·w pixels of x (h×w maps of cin) →
 * col [np][k·k·cin] in the order (ky·k + kx)·cin + ci, zero padding k/2. */
cudaError_t ehat_cuda_im2col (cudaStream_t s, const float *x, int h, int w,
    int cin, int k, size_t p0, size_t np, float *col);
/* y[r][j] = act(y[r][j] + b[j]) + alpha·res[r][j] (res may be NULL). */
cudaError_t ehat_cuda_bias_act (cudaStream_t s, float *y, size_t rows, int c,
    const float *b, int act, const float *res, float alpha);
/* Conv epilogue with pixel shuffle: t [np][cout] holds the GEMM output of
 * pixels [p0, p0 + np) of n maps h×w; v = act(t + b) + alpha·res[p][o]
 * (res unshuffled, may be NULL) goes to channel o/s² of pixel
 * (y·s + (o/s)%s, x·s + o%s) of y, maps (h·s)×(w·s)×(cout/s²). */
cudaError_t ehat_cuda_bias_act_shuffle (cudaStream_t s, const float *t,
    size_t p0, size_t np, int h, int w, int cout, int shuffle,
    const float *b, int act, const float *res, float alpha, float *y);

/* Per row of c, eps 1e-5, biased variance; y may be x. */
cudaError_t ehat_cuda_layernorm (cudaStream_t s, const float *x, size_t rows,
    int c, const float *g, const float *b, float *y);
/* y = a·x + b·y; y is not read when b == 0. */
cudaError_t ehat_cuda_axpby (cudaStream_t s, float *y, float a,
    const float *x, float b, size_t n);

/* Channel attention: sums [n][c] (double, zeroed here) of each image's hw
 * rows; then scale [n][c] = sigmoid(up(ReLU(down(sums/hw)))); then
 * v[img][r][j] ·= scale[img][j]. */
cudaError_t ehat_cuda_channel_sums (cudaStream_t s, const float *v, int n,
    size_t hw, int c, double *sums);
cudaError_t ehat_cuda_channel_mlp (cudaStream_t s, const double *sums, int n,
    size_t hw, int c, const float *dw, const float *db, int mid,
    const float *uw, const float *ub, float *scale);
cudaError_t ehat_cuda_channel_scale (cudaStream_t s, float *v, int n,
    size_t hw, int c, const float *scale);

/* DANet CAM: each of the n c×c matrices e (symmetric Gram matrices) row by
 * row, in place: e[r][j] = γ·softmax_j(max_j e[r] − e[r][j]). */
cudaError_t ehat_cuda_gram_softmax (cudaStream_t s, float *e, int n, int c,
    float gamma);

/* ---- ehat-cuda-attention.cu ---- */

/* dense[(hd·nk + j)·nq + i] = table[index[i·nk + j]·heads + hd]: the bias
 * of query i and key j of head hd, query-fastest for coalesced reads. */
cudaError_t ehat_cuda_expand_bias (cudaStream_t s, const float *table,
    const int32_t *index, int heads, int nq, int nk, float *dense);
/* HAB window attention (shift 0 or the cyclic shift with the −100 mask) and
 * OCAB overlapping attention, as the backend ops of the same names; bias
 * from ehat_cuda_expand_bias.  Head dim c/heads ≤ 64 (else
 * cudaErrorInvalidValue). */
cudaError_t ehat_cuda_window_attention (cudaStream_t s, const float *qkv,
    int n, int h, int w, int c, int heads, int ws, int shift,
    const float *dense_bias, float *out);
cudaError_t ehat_cuda_overlap_attention (cudaStream_t s, const float *qkv,
    int n, int h, int w, int c, int heads, int ws, int wse,
    const float *dense_bias, float *out);

/* ---- ehat-cuda-danet.cu ---- */

/* DANet PAM: stats [n·hw][2] = (max_j s_ij, Σ_j exp(s_ij − max)), then
 * out_i += γ/Σ · Σ_j exp(s_ij − max)·v_j.  dq ≤ 64. */
cudaError_t ehat_cuda_pam_stats (cudaStream_t s, const float *q,
    const float *k, int n, size_t hw, int dq, float *stats);
cudaError_t ehat_cuda_pam_apply (cudaStream_t s, const float *q,
    const float *k, const float *v, int n, size_t hw, int dq, int c,
    float gamma, const float *stats, float *out);

#ifdef __cplusplus
}
#endif

#endif /* EHAT_CUDA_H */
