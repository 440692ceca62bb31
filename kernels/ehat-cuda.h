/* The CUDA kernels behind a small C interface (internal to the CUDA backend,
 * kernels/ehat-cuda-backend*.c).
 *
 * Every launcher enqueues its kernel(s) on `s` and returns the launch status
 * (cudaGetLastError()); execution errors surface later, at the backend's
 * sync.  Layout as in ehat-backend.h: feature maps are NHWC, "tokens ×
 * channels" rows of floats.  All sizes in elements.
 *
 * Precision: activations are stored in the type `dt` names (fp32, fp16 or
 * bf16) and every kernel computes and accumulates in fp32. */
#ifndef EHAT_CUDA_H
#define EHAT_CUDA_H

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include "ehat-frame-desc.h"

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

/* Storage type of activation buffers (the `dt` arguments; `void *`
 * buffers below hold elements of it).  Weights, biases, bias tables and
 * statistics are always fp32 (`float *`). */
typedef enum
{
  EHAT_CUDA_F32 = 0,
  EHAT_CUDA_F16 = 1,
  EHAT_CUDA_BF16 = 2,
} EhatCudaDtype;

/* ---- ehat-cuda-elementwise.cu ---- */

/* dst[i] = src[i] rounded to dt (weights converted once, at first use). */
cudaError_t ehat_cuda_convert (cudaStream_t s, const float *src, size_t n,
    int dt, void *dst);

/* planar n×3×h×w (device, fp32) → NHWC n×H×W×3, reflect padding (periodic
 * mirror), (v − mean)·range. */
cudaError_t ehat_cuda_input (cudaStream_t s, int dt, const float *planar,
    int n, int w, int h, int W, int H, float m0, float m1, float m2,
    float range, void *x);
/* NHWC n×H×W×3 → planar n×3×h×w (crop, fp32), v/range + mean. */
cudaError_t ehat_cuda_output (cudaStream_t s, int dt, const void *x, int n,
    int W, int H, int w, int h, float m0, float m1, float m2, float range,
    float *planar);

/* ---- ehat-cuda-frame.cu ---- */

/* ehat_cuda_input() from the pixels of a video frame described by d
 * (ehat_frame_describe()), its planes on the device with the given
 * strides: ehat_frame_read()'s conversion, to the same floats. */
cudaError_t ehat_cuda_frame_input (cudaStream_t s, int dt,
    const EhatFrameDesc *d, unsigned char *const planes[4],
    const int strides[4], int W, int H, float m0, float m1, float m2,
    float range, void *x);
/* ehat_cuda_output() of the top-left d->width × d->height pixels of the
 * NHWC map x (W pixels a row) into a frame's planes on the device:
 * ehat_frame_write()'s conversion, to the same codes.  Alpha: resized
 * bilinearly (ehat_plane_resize_bilinear()) from the packed frame
 * alpha_from whose rows lie packed at alpha_plane, or opaque when
 * alpha_from is NULL. */
cudaError_t ehat_cuda_frame_output (cudaStream_t s, int dt, const void *x,
    int W, float m0, float m1, float m2, float range,
    const EhatFrameDesc *d, unsigned char *const planes[4],
    const int strides[4], const EhatFrameDesc *alpha_from,
    const void *alpha_plane);

/* fp32 rows × cols (row-major) → dst rows_p × cols_p of dt, zero-padded
 * (GEMM weights widened to aligned dimensions). */
cudaError_t ehat_cuda_convert_pad (cudaStream_t s, const float *src,
    int rows, int cols, int rows_p, int cols_p, int dt, void *dst);
/* x [rows][c] → dst [rows][ldp] (ldp ≥ c), the tail of each row zeroed. */
cudaError_t ehat_cuda_pad_rows (cudaStream_t s, int dt, const void *x,
    size_t rows, int c, int ldp, void *dst);

/* Pixels [p0, p0 + np) of the n·h·w pixels of x (h×w maps of cin) →
 * col [np][ldc] in the order (ky·k + kx)·cin + ci, zero padding k/2, and
 * zeros from k·k·cin to ldc (ldc·size a multiple of 16 bytes or = k·k·cin). */
cudaError_t ehat_cuda_im2col (cudaStream_t s, int dt, const void *x, int h,
    int w, int cin, int k, size_t p0, size_t np, int ldc, void *col);
/* y[r][j] = act(t[r][j] + b[j]) + alpha·res[r][j] for j < c, rows of t
 * ldt apart (t may be y with ldt = c; res may be NULL or y; b may be
 * NULL). */
cudaError_t ehat_cuda_bias_act (cudaStream_t s, int dt, const void *t,
    int ldt, void *y, size_t rows, int c, const float *b, int act,
    const void *res, float alpha);
/* Conv epilogue with pixel shuffle: t [np][ldt] holds the GEMM output of
 * pixels [p0, p0 + np) of n maps h×w; v = act(t + b) + alpha·res[p][o]
 * (res unshuffled, may be NULL) goes to channel o/s² of pixel
 * (y·s + (o/s)%s, x·s + o%s) of y, maps (h·s)×(w·s)×(cout/s²). */
cudaError_t ehat_cuda_bias_act_shuffle (cudaStream_t s, int dt,
    const void *t, int ldt, size_t p0, size_t np, int h, int w, int cout,
    int shuffle,
    const float *b, int act, const void *res, float alpha, void *y);

/* Per row of c, eps 1e-5, biased variance; y may be x. */
cudaError_t ehat_cuda_layernorm (cudaStream_t s, int dt, const void *x,
    size_t rows, int c, const float *g, const float *b, void *y);
/* y = a·x + b·y; y is not read when b == 0. */
cudaError_t ehat_cuda_axpby (cudaStream_t s, int dt, void *y, float a,
    const void *x, float b, size_t n);

/* Channel attention: partial sums parts [n][P][c] (double, P =
 * ehat_cuda_channel_sum_parts (hw)) of each image's hw rows; then scale
 * [n][c] = sigmoid(up(ReLU(down(Σ parts/hw)))), the parts added in order
 * (no atomics: the same image gives the same bits in any run or batch);
 * then v[img][r][j] ·= scale[img][j]. */
size_t ehat_cuda_channel_sum_parts (size_t hw);
cudaError_t ehat_cuda_channel_sums (cudaStream_t s, int dt, const void *v,
    int n, size_t hw, int c, double *parts);
cudaError_t ehat_cuda_channel_mlp (cudaStream_t s, const double *parts, int n,
    size_t hw, int c, const float *dw, const float *db, int mid,
    const float *uw, const float *ub, float *scale);
cudaError_t ehat_cuda_channel_scale (cudaStream_t s, int dt, void *v, int n,
    size_t hw, int c, const float *scale);
/* The scaling with CAB's sums folded in (channel_attention_add):
 * t = w1·t + alpha·(v·scale + w0·x0); x0 may be NULL, t is not read when
 * w1 = 0, v is not written (unless it is t). */
cudaError_t ehat_cuda_channel_scale_add (cudaStream_t s, int dt,
    const void *v, int n, size_t hw, int c, const float *scale, float w0,
    const void *x0, float alpha, float w1, void *t);

/* DANet CAM: each of the n c×c fp32 matrices e (symmetric Gram matrices)
 * row by row: a[r][j] = γ·softmax_j(max_j e[r] − e[r][j]) written to a as
 * dt (a may be e when dt is fp32). */
cudaError_t ehat_cuda_gram_softmax (cudaStream_t s, int dt, const float *e,
    int n, int c, float gamma, void *a);

/* ---- ehat-cuda-gemm-mma.cu ---- */

/* One convolution (k = 3, zero padding 1) or linear layer (k = 1) as a
 * single tensor-core kernel: for each of `rows` input pixels or rows of x
 * (NHWC, rows of cin; n·h·w pixels for a conv) and output channel o < cout,
 *   v = act(Σ_k A[row][k]·wt[o][k] + b[o]) + alpha·res[row][o]
 * with A the im2col row in the order (ky·k + kx)·cin + ci, gathered on the
 * fly; stored to y[row][o] (rows of cout), or for shuffle s > 1 to channel
 * o/s² of pixel (y·s + (o/s)%s, x·s + o%s) of the (h·s)×(w·s) maps of y.
 * wt: [≥ cout][ldw] in the storage type, zero beyond k·k·cin; ldw a
 * multiple of 8, wt 16-byte aligned.  b, res may be NULL; res may be y
 * (read before written), x may not.  fp16/bf16 on compute capability 8.0
 * or newer: cudaErrorNotSupported otherwise, with nothing launched. */
typedef struct
{
  const void *x;
  size_t rows;
  int h, w;                     /* conv (k = 3) and shuffle geometry */
  int cin, k;
  const void *wt;
  int ldw, cout;
  const float *b;
  int act;
  const void *res;
  float alpha;
  int shuffle;                  /* 1: none */
  void *y;
} EhatCudaGemm;

cudaError_t ehat_cuda_gemm_fused (cudaStream_t s, int dt,
    const EhatCudaGemm *g);

/* ---- ehat-cuda-conv-direct.cu ---- */

#define EHAT_CUDA_DIRECT_MAX_OUT 8
#define EHAT_CUDA_DIRECT_MAX_SMEM (48 << 10)

/* y = act(conv(x) + b) + alpha·res for a k×k convolution (k 1 or 3, zero
 * padding) with at most EHAT_CUDA_DIRECT_MAX_OUT outputs; NHWC rows of cin
 * in, of cout out; res may be y.  Weights wt in the storage type:
 * co_major, [cout…][ldw ≥ k·k·cin] (the fp16/bf16 GEMM layout), else
 * [k·k·cin][ldw ≥ cout] (the fp32 one), both indexed by (ky·k + kx)·cin +
 * ci.  cudaErrorNotSupported (nothing launched) for other shapes or when
 * the weights exceed EHAT_CUDA_DIRECT_MAX_SMEM as fp32. */
typedef struct
{
  const void *x;
  size_t rows;                  /* n·h·w */
  int h, w, cin, k;
  const void *wt;
  int ldw, co_major, cout;
  const float *b;
  int act;
  const void *res;
  float alpha;
  void *y;
} EhatCudaConvDirect;

cudaError_t ehat_cuda_conv_direct (cudaStream_t s, int dt,
    const EhatCudaConvDirect *c);

/* ---- ehat-cuda-attention.cu ---- */

/* dense[(hd·nk + j)·nq + i] = table[index[i·nk + j]·heads + hd]: the bias
 * of query i and key j of head hd, query-fastest for coalesced reads. */
cudaError_t ehat_cuda_expand_bias (cudaStream_t s, const float *table,
    const int32_t *index, int heads, int nq, int nk, float *dense);
/* A relative-position index that is separable, index[i·nk + j] = (qoff[i]
 * + koff[j]) mod len with both offsets in [0, len) (HAT's and OCAB's are:
 * EHAT-SPEC.md §4), so that a block needs only its head's column of the
 * table, rows 0..rows−1 (the largest index + 1), not the dense expansion. */
typedef struct
{
  const float *table;           /* [rows…][heads] fp32 (device) */
  const int32_t *qoff, *koff;   /* [nq], [nk] (device) */
  int len, rows;
} EhatCudaRelBias;

/* HAB window attention (shift 0 or the cyclic shift with the −100 mask) and
 * OCAB overlapping attention, as the backend ops of the same names, with
 * the bias either dense (from ehat_cuda_expand_bias) or rel (exactly one
 * of the two given): on tensor cores where ehat_cuda_attention_mma takes
 * it, else on CUDA cores.  Head dim c/heads ≤ 64 (else
 * cudaErrorInvalidValue); cudaErrorNotSupported, nothing launched, when
 * rel's table column (rel.rows floats) is over 32 KiB: the dense bias
 * then. */
cudaError_t ehat_cuda_window_attention (cudaStream_t s, int dt,
    const void *qkv, int n, int h, int w, int c, int heads, int ws,
    int shift, const float *dense_bias, const EhatCudaRelBias *rel,
    void *out);
cudaError_t ehat_cuda_overlap_attention (cudaStream_t s, int dt,
    const void *qkv, int n, int h, int w, int c, int heads, int ws, int wse,
    const float *dense_bias, const EhatCudaRelBias *rel, void *out);

/* ---- ehat-cuda-attention-mma.cu ---- */

/* Both attentions on tensor cores (param: shift for HAB, wse for OCAB with
 * overlap set), the bias either dense or rel (exactly one of the two
 * given), as the two functions above, which try it first: fp16 or bf16
 * storage, compute capability ≥ 8.0, head dim ≤ 64, ws² a multiple of 16,
 * the window's keys and values (and rel's table column) within the shared
 * memory of a block, and EHAT_CUDA_ATTENTION not set to "simt".
 * Otherwise it returns cudaErrorNotSupported and launches nothing. */
cudaError_t ehat_cuda_attention_mma (cudaStream_t s, int dt, const void *qkv,
    int n, int h, int w, int c, int heads, int ws, int param, int overlap,
    const float *bias, const EhatCudaRelBias *rel, void *out);

/* ---- ehat-cuda-danet.cu ---- */

/* DANet PAM: stats [n·hw][2] = (max_j s_ij, Σ_j exp(s_ij − max)), then
 * out_i += γ/Σ · Σ_j exp(s_ij − max)·v_j.  dq ≤ 64. */
cudaError_t ehat_cuda_pam_stats (cudaStream_t s, int dt, const void *q,
    const void *k, int n, size_t hw, int dq, float *stats);
cudaError_t ehat_cuda_pam_apply (cudaStream_t s, int dt, const void *q,
    const void *k, const void *v, int n, size_t hw, int dq, int c,
    float gamma, const float *stats, void *out);

#ifdef __cplusplus
}
#endif

#endif /* EHAT_CUDA_H */
