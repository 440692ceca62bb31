/* The CUDA backend: every operation of EhatBackendOps (ehat-backend.h) on
 * one CUDA stream per backend instance, GEMMs through cuBLAS, the rest in
 * the kernels of this directory (ehat-cuda.h).  Built with them into the
 * module libehat-cuda.so, which libehat opens on demand
 * (ehat-core/ehat-backend-module.c; the entry is at the end of this file).
 *
 * Status: fp32 (the reference path, no TF32) and tf32 (cuBLAS TF32 tensor
 * ops for the GEMMs); fp16/bf16 are refused with EHAT_ERROR_UNSUPPORTED
 * until their kernels exist.  Device buffers hold fp32 everywhere; reduced
 * precisions will convert the weights once at upload (upload, borrow,
 * upload_conv) and keep activations in the arena in the narrow type, which
 * the ops below will then dispatch on (cb->precision).
 *
 * Errors: operations return nothing; the first failure (launch error,
 * cuBLAS status, scratch allocation) is recorded and reported by sync() as
 * a GError (EHAT_ERROR_OUT_OF_MEMORY for allocation failures, else
 * EHAT_ERROR_BACKEND).  After a failure the following operations are
 * skipped until sync() has reported it. */
#include "ehat-backend.h"
#include "ehat-cuda.h"

#include <gmodule.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <limits.h>
#include <string.h>

#define CB(be) ((EhatCudaBackend *) (be))

/* im2col bands of at most this many floats (64 MiB). */
#define BAND_FLOATS ((gsize) 1 << 24)

typedef enum
{
  SCR_COL,                      /* im2col band */
  SCR_TMP,                      /* conv output band before pixel shuffle */
  SCR_BIAS,                     /* dense relative-position bias */
  SCR_SUMS,                     /* channel-attention sums (double) */
  SCR_SCALE,                    /* channel-attention scales */
  SCR_STATS,                    /* DANet PAM row max/sum */
  SCR_GRAM,                     /* DANet CAM c×c matrices */
  SCR_IN,                       /* planar input staging */
  SCR_OUT,                      /* planar output staging */
  N_SCRATCH
} EhatScratch;

typedef struct
{
  EhatBackend parent;
  int device;
  EhatPrecision precision;
  cudaStream_t stream;
  cublasHandle_t blas;
  char *description;
  GError *error;                /* first failure since the last sync */
  void *scratch[N_SCRATCH];
  gsize scratch_bytes[N_SCRATCH];
} EhatCudaBackend;

/* ---- errors ---- */

static void
record_cuda (EhatCudaBackend *cb, cudaError_t e, const char *what)
{
  if (e == cudaSuccess)
    return;
  /* clears the error unless it is sticky (then the context is lost and
   * every later call fails too) */
  (void) cudaGetLastError ();
  if (cb->error)
    return;
  g_set_error (&cb->error, EHAT_ERROR, e == cudaErrorMemoryAllocation
      ? EHAT_ERROR_OUT_OF_MEMORY : EHAT_ERROR_BACKEND,
      "CUDA error in %s: %s (%s)", what, cudaGetErrorString (e),
      cudaGetErrorName (e));
}

static void
record_blas (EhatCudaBackend *cb, cublasStatus_t st, const char *what)
{
  if (st == CUBLAS_STATUS_SUCCESS || cb->error)
    return;
  g_set_error (&cb->error, EHAT_ERROR, st == CUBLAS_STATUS_ALLOC_FAILED
      ? EHAT_ERROR_OUT_OF_MEMORY : EHAT_ERROR_BACKEND,
      "cuBLAS error in %s: %s", what, cublasGetStatusString (st));
}

static void
record_msg (EhatCudaBackend *cb, EhatError code, const char *msg)
{
  if (!cb->error)
    g_set_error_literal (&cb->error, EHAT_ERROR, code, msg);
}

/* At the start of every operation: skip work after a failure, and make the
 * backend's device current in the calling thread. */
static gboolean
enter (EhatCudaBackend *cb)
{
  if (cb->error)
    return FALSE;
  record_cuda (cb, cudaSetDevice (cb->device), "cudaSetDevice");
  return cb->error == NULL;
}

static void
set_gerror (GError **error, cudaError_t e, const char *what)
{
  (void) cudaGetLastError ();
  g_set_error (error, EHAT_ERROR, e == cudaErrorMemoryAllocation
      ? EHAT_ERROR_OUT_OF_MEMORY : EHAT_ERROR_BACKEND,
      "CUDA error in %s: %s", what, cudaGetErrorString (e));
}

/* A scratch buffer of at least `bytes`, grown on demand (after the stream
 * has drained: queued kernels may still use the old one). */
static void *
scratch (EhatCudaBackend *cb, EhatScratch slot, gsize bytes)
{
  void *p = NULL;
  cudaError_t e;

  if (bytes <= cb->scratch_bytes[slot] && cb->scratch[slot])
    return cb->scratch[slot];
  if (cb->scratch[slot]) {
    record_cuda (cb, cudaStreamSynchronize (cb->stream), "scratch");
    cudaFree (cb->scratch[slot]);
    cb->scratch[slot] = NULL;
    cb->scratch_bytes[slot] = 0;
  }
  bytes = (MAX (bytes, 1) + 0xfffff) & ~(gsize) 0xfffff;
  e = cudaMalloc (&p, bytes);
  if (e != cudaSuccess) {
    record_cuda (cb, e, "scratch allocation");
    return NULL;
  }
  cb->scratch[slot] = p;
  cb->scratch_bytes[slot] = bytes;
  return p;
}

/* ---- lifetime ---- */

static void
cuda_destroy (EhatBackend *be)
{
  EhatCudaBackend *cb = CB (be);

  cudaSetDevice (cb->device);
  if (cb->stream)
    cudaStreamSynchronize (cb->stream);
  for (int i = 0; i < N_SCRATCH; i++)
    if (cb->scratch[i])
      cudaFree (cb->scratch[i]);
  if (cb->blas)
    cublasDestroy (cb->blas);
  if (cb->stream)
    cudaStreamDestroy (cb->stream);
  g_clear_error (&cb->error);
  g_free (cb->description);
  g_free (cb);
}

static const char *
cuda_describe (EhatBackend *be)
{
  return CB (be)->description;
}

/* ---- memory ---- */

static float *
cuda_alloc (EhatBackend *be, gsize n, GError **error)
{
  EhatCudaBackend *cb = CB (be);
  void *p = NULL;
  cudaError_t e;

  if (n > G_MAXSIZE / sizeof (float) - 64) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY,
        "allocation of %" G_GSIZE_FORMAT " floats overflows", n);
    return NULL;
  }
  cudaSetDevice (cb->device);
  e = cudaMalloc (&p, MAX (n, 1) * sizeof (float));
  if (e != cudaSuccess) {
    (void) cudaGetLastError ();
    g_set_error (error, EHAT_ERROR, e == cudaErrorMemoryAllocation
        ? EHAT_ERROR_OUT_OF_MEMORY : EHAT_ERROR_BACKEND,
        "%s allocating %" G_GSIZE_FORMAT " MiB of device memory",
        e == cudaErrorMemoryAllocation ? "out of device memory"
        : cudaGetErrorString (e), (n * sizeof (float)) >> 20);
    return NULL;
  }
  return p;
}

static void
cuda_free (EhatBackend *be, void *p)
{
  EhatCudaBackend *cb = CB (be);

  if (!p)
    return;
  cudaSetDevice (cb->device);
  /* queued work may still read it */
  record_cuda (cb, cudaStreamSynchronize (cb->stream), "free");
  record_cuda (cb, cudaFree (p), "cudaFree");
}

static void *
upload_bytes (EhatCudaBackend *cb, const void *host, gsize bytes,
    GError **error)
{
  float *p = cuda_alloc (&cb->parent, (bytes + 3) / 4, error);
  cudaError_t e;

  if (!p)
    return NULL;
  /* stream-ordered: the kernels that use it run after the copy; pageable
   * host memory is staged before the call returns */
  e = cudaMemcpyAsync (p, host, bytes, cudaMemcpyHostToDevice, cb->stream);
  if (e != cudaSuccess) {
    set_gerror (error, e, "upload");
    cudaFree (p);
    return NULL;
  }
  return p;
}

static float *
cuda_upload (EhatBackend *be, const float *host, gsize n, GError **error)
{
  return upload_bytes (CB (be), host, n * sizeof (float), error);
}

static void
cuda_unborrow (EhatBackend *be, float *p)
{
  cuda_free (be, p);
}

static gint32 *
cuda_upload_index (EhatBackend *be, const gint32 *host, gsize n,
    GError **error)
{
  return upload_bytes (CB (be), host, n * sizeof (gint32), error);
}

/* [cout, cin, k, k] → [(ky·k + kx)·cin + ci][cout], the im2col order (the
 * CPU backend's layout): row-major K×N for the GEMM. */
static float *
cuda_upload_conv (EhatBackend *be, const float *w, int cout, int cin, int k,
    GError **error)
{
  gsize kk = (gsize) k * k, n = kk * cin * cout;
  g_autofree float *p = g_try_new (float, MAX (n, 1));

  if (!p) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY,
        "out of host memory repacking a convolution");
    return NULL;
  }
  for (int co = 0; co < cout; co++)
    for (int ci = 0; ci < cin; ci++)
      for (gsize t = 0; t < kk; t++)
        p[(t * cin + ci) * cout + co] = w[((gsize) co * cin + ci) * kk + t];
  return upload_bytes (CB (be), p, n * sizeof (float), error);
}

/* ---- input / output ---- */

static void
cuda_input (EhatBackend *be, const float *host, int n, int w, int h, int W,
    int H, const float mean[3], float range, float *x)
{
  EhatCudaBackend *cb = CB (be);
  gsize bytes = (gsize) n * 3 * h * w * sizeof (float);
  float *stage;

  if (!enter (cb) || !(stage = scratch (cb, SCR_IN, bytes)))
    return;
  record_cuda (cb, cudaMemcpyAsync (stage, host, bytes,
          cudaMemcpyHostToDevice, cb->stream), "input copy");
  if (!cb->error)
    record_cuda (cb, ehat_cuda_input (cb->stream, stage, n, w, h, W, H,
            mean[0], mean[1], mean[2], range, x), "input");
}

static void
cuda_output (EhatBackend *be, const float *x, int n, int W, int H, int w,
    int h, const float mean[3], float range, float *host)
{
  EhatCudaBackend *cb = CB (be);
  gsize bytes = (gsize) n * 3 * h * w * sizeof (float);
  float *stage;

  if (!enter (cb) || !(stage = scratch (cb, SCR_OUT, bytes)))
    return;
  record_cuda (cb, ehat_cuda_output (cb->stream, x, n, W, H, w, h, mean[0],
          mean[1], mean[2], range, stage), "output");
  if (!cb->error)
    record_cuda (cb, cudaMemcpyAsync (host, stage, bytes,
            cudaMemcpyDeviceToHost, cb->stream), "output copy");
  /* the caller owns `host` as soon as we return */
  if (!cb->error)
    record_cuda (cb, cudaStreamSynchronize (cb->stream), "output");
}

/* ---- convolution: im2col bands + SGEMM + epilogue ---- */

/* Column-major SGEMM over row-major data: C[rows][ncol] = A[rows][k] ·
 * B[k][ncol] is, column-major, Cᵀ = Bᵀ·Aᵀ. */
static void
cuda_conv (EhatBackend *be, const EhatConvW *cw, const float *x, int n,
    int h, int w, float *y, EhatAct act, const float *res, float alpha,
    int shuffle)
{
  EhatCudaBackend *cb = CB (be);
  gsize m = (gsize) n * h * w;
  gsize kc = (gsize) cw->k * cw->k * cw->cin;
  gboolean direct = cw->k == 1;         /* a 1×1 conv reads x as it is */
  gsize band = direct ? (gsize) (INT_MAX / 2) / MAX (kc, (gsize) cw->cout)
      : MAX (BAND_FLOATS / kc, 1);
  /* a residual that is the output itself enters through the GEMM's beta */
  gboolean in_place = res && res == y && shuffle == 1;
  const float one = 1.0f, beta = in_place ? alpha : 0.0f;
  float *col = NULL, *tmp = NULL;

  if (!enter (cb) || m == 0)
    return;
  band = MIN (band, m);
  if (shuffle == 1)
    band = MIN (band, (gsize) (INT_MAX / 2) / (gsize) cw->cout);
  if (!direct && !(col = scratch (cb, SCR_COL, band * kc * sizeof (float))))
    return;
  if (shuffle > 1) {
    band = MIN (band, BAND_FLOATS / (gsize) cw->cout + 1);
    if (!(tmp = scratch (cb, SCR_TMP, band * cw->cout * sizeof (float))))
      return;
  }

  for (gsize p0 = 0; p0 < m && !cb->error; p0 += band) {
    gsize np = MIN (band, m - p0);
    float *dst = tmp ? tmp : y + p0 * cw->cout;
    const float *B = direct ? x + p0 * cw->cin : col;

    if (!direct)
      record_cuda (cb, ehat_cuda_im2col (cb->stream, x, h, w, cw->cin, cw->k,
              p0, np, col), "im2col");
    record_blas (cb, cublasSgemm (cb->blas, CUBLAS_OP_N, CUBLAS_OP_N,
            cw->cout, (int) np, (int) kc, &one, cw->w, cw->cout, B, (int) kc,
            &beta, dst, cw->cout), "conv GEMM");
    if (cb->error)
      break;
    if (tmp)
      record_cuda (cb, ehat_cuda_bias_act_shuffle (cb->stream, tmp, p0, np,
              h, w, cw->cout, shuffle, cw->b, act, res, alpha, y),
          "conv shuffle epilogue");
    else
      record_cuda (cb, ehat_cuda_bias_act (cb->stream, dst, np, cw->cout,
              cw->b, act, res && !in_place ? res + p0 * cw->cout : NULL,
              alpha), "conv epilogue");
  }
}

/* y = act(x·Wᵀ + b) + beta·y: column-major yᵀ = W·xᵀ with W's row-major
 * [out][in] buffer read transposed. */
static void
cuda_linear (EhatBackend *be, const EhatLinearW *lw, const float *x,
    gsize rows, float *y, EhatAct act, float beta)
{
  EhatCudaBackend *cb = CB (be);
  const float one = 1.0f;
  gsize chunk = (gsize) (INT_MAX / 2) / (gsize) MAX (lw->in, lw->out);

  if (!enter (cb) || rows == 0)
    return;
  for (gsize r0 = 0; r0 < rows && !cb->error; r0 += chunk) {
    gsize nr = MIN (chunk, rows - r0);
    record_blas (cb, cublasSgemm (cb->blas, CUBLAS_OP_T, CUBLAS_OP_N,
            lw->out, (int) nr, lw->in, &one, lw->w, lw->in,
            x + r0 * lw->in, lw->in, &beta, y + r0 * lw->out, lw->out),
        "linear GEMM");
  }
  if (!cb->error)
    record_cuda (cb, ehat_cuda_bias_act (cb->stream, y, rows, lw->out, lw->b,
            act, NULL, 0.0f), "linear epilogue");
}

static void
cuda_layernorm (EhatBackend *be, const EhatNormW *nw, const float *x,
    gsize rows, int c, float *y)
{
  EhatCudaBackend *cb = CB (be);

  if (enter (cb))
    record_cuda (cb, ehat_cuda_layernorm (cb->stream, x, rows, c, nw->w,
            nw->b, y), "layernorm");
}

static void
cuda_axpby (EhatBackend *be, float *y, float a, const float *x, float b,
    gsize n)
{
  EhatCudaBackend *cb = CB (be);

  if (enter (cb))
    record_cuda (cb, ehat_cuda_axpby (cb->stream, y, a, x, b, n), "axpby");
}

/* ---- attention ---- */

static void
cuda_window_attention (EhatBackend *be, const float *qkv, int n, int h,
    int w, int c, int heads, int ws, int shift, const float *table,
    const gint32 *index, float *out)
{
  EhatCudaBackend *cb = CB (be);
  int nq = ws * ws;
  float *bias;

  if (!enter (cb) || !(bias = scratch (cb, SCR_BIAS, (gsize) heads * nq * nq
              * sizeof (float))))
    return;
  record_cuda (cb, ehat_cuda_expand_bias (cb->stream, table, index, heads,
          nq, nq, bias), "attention bias");
  if (!cb->error)
    record_cuda (cb, ehat_cuda_window_attention (cb->stream, qkv, n, h, w, c,
            heads, ws, shift, bias, out), "window attention");
}

static void
cuda_overlap_attention (EhatBackend *be, const float *qkv, int n, int h,
    int w, int c, int heads, int ws, int wse, const float *table,
    const gint32 *index, float *out)
{
  EhatCudaBackend *cb = CB (be);
  int nq = ws * ws, nk = wse * wse;
  float *bias;

  if (!enter (cb) || !(bias = scratch (cb, SCR_BIAS, (gsize) heads * nq * nk
              * sizeof (float))))
    return;
  record_cuda (cb, ehat_cuda_expand_bias (cb->stream, table, index, heads,
          nq, nk, bias), "attention bias");
  if (!cb->error)
    record_cuda (cb, ehat_cuda_overlap_attention (cb->stream, qkv, n, h, w,
            c, heads, ws, wse, bias, out), "overlap attention");
}

static void
cuda_channel_attention (EhatBackend *be, const EhatLinearW *down,
    const EhatLinearW *up, float *v, int n, gsize hw, int c)
{
  EhatCudaBackend *cb = CB (be);
  double *sums;
  float *sc;

  if (!enter (cb)
      || !(sums = scratch (cb, SCR_SUMS, (gsize) n * c * sizeof (double)))
      || !(sc = scratch (cb, SCR_SCALE, (gsize) n * c * sizeof (float))))
    return;
  record_cuda (cb, ehat_cuda_channel_sums (cb->stream, v, n, hw, c, sums),
      "channel attention (mean)");
  if (!cb->error)
    record_cuda (cb, ehat_cuda_channel_mlp (cb->stream, sums, n, hw, c,
            down->w, down->b, down->out, up->w, up->b, sc),
        "channel attention (MLP)");
  if (!cb->error)
    record_cuda (cb, ehat_cuda_channel_scale (cb->stream, v, n, hw, c, sc),
        "channel attention (scale)");
}

static void
cuda_position_attention (EhatBackend *be, const float *q, const float *k,
    const float *v, int n, gsize hw, int dq, int c, float gamma, float *out)
{
  EhatCudaBackend *cb = CB (be);
  float *stats;

  if (!enter (cb) || !(stats = scratch (cb, SCR_STATS, (gsize) n * hw * 2
              * sizeof (float))))
    return;
  record_cuda (cb, ehat_cuda_pam_stats (cb->stream, q, k, n, hw, dq, stats),
      "position attention (stats)");
  if (!cb->error)
    record_cuda (cb, ehat_cuda_pam_apply (cb->stream, q, k, v, n, hw, dq, c,
            gamma, stats, out), "position attention");
}

/* E = FᵀF per image (column-major: F is c×hw with ld c, E = F·Fᵀ), the row
 * softmax with γ folded in, then outᵀ += A·fᵀ (A row-major = Aᵀ
 * column-major, hence op T). */
static void
cuda_channel_gram_attention (EhatBackend *be, const float *f, int n,
    gsize hw, int c, float gamma, float *out)
{
  EhatCudaBackend *cb = CB (be);
  const float one = 1.0f, zero = 0.0f;
  long long sf = (long long) hw * c, se = (long long) c * c;
  float *e;

  if (!enter (cb))
    return;
  if (hw > INT_MAX) {
    record_msg (cb, EHAT_ERROR_INVALID_ARGUMENT,
        "channel attention: map too large");
    return;
  }
  if (!(e = scratch (cb, SCR_GRAM, (gsize) n * c * c * sizeof (float))))
    return;
  record_blas (cb, cublasSgemmStridedBatched (cb->blas, CUBLAS_OP_N,
          CUBLAS_OP_T, c, c, (int) hw, &one, f, c, sf, f, c, sf, &zero, e, c,
          se, n), "channel attention Gram GEMM");
  if (!cb->error)
    record_cuda (cb, ehat_cuda_gram_softmax (cb->stream, e, n, c, gamma),
        "channel attention softmax");
  if (!cb->error)
    record_blas (cb, cublasSgemmStridedBatched (cb->blas, CUBLAS_OP_T,
            CUBLAS_OP_N, c, (int) hw, c, &one, e, c, se, f, c, sf, &one, out,
            c, sf, n), "channel attention GEMM");
}

static gboolean
cuda_sync (EhatBackend *be, GError **error)
{
  EhatCudaBackend *cb = CB (be);

  cudaSetDevice (cb->device);
  record_cuda (cb, cudaStreamSynchronize (cb->stream), "stream");
  if (cb->error) {
    g_propagate_error (error, g_steal_pointer (&cb->error));
    return FALSE;
  }
  return TRUE;
}

static const EhatBackendOps cuda_ops = {
  .destroy = cuda_destroy,
  .describe = cuda_describe,
  .alloc = cuda_alloc,
  .free = cuda_free,
  .upload = cuda_upload,
  .borrow = cuda_upload,
  .unborrow = cuda_unborrow,
  .upload_index = cuda_upload_index,
  .upload_conv = cuda_upload_conv,
  .input = cuda_input,
  .output = cuda_output,
  .conv = cuda_conv,
  .linear = cuda_linear,
  .layernorm = cuda_layernorm,
  .axpby = cuda_axpby,
  .window_attention = cuda_window_attention,
  .overlap_attention = cuda_overlap_attention,
  .channel_attention = cuda_channel_attention,
  .position_attention = cuda_position_attention,
  .channel_gram_attention = cuda_channel_gram_attention,
  .sync = cuda_sync,
};

/* The backend's constructor, reached through the module entry below. */
static EhatBackend *
cuda_backend_new (int device_id, EhatPrecision precision, GError **error)
{
  EhatCudaBackend *cb;
  struct cudaDeviceProp prop;
  int count = 0, major = 0, minor = 0;
  cudaError_t e;
  cublasStatus_t st;

  if (precision == EHAT_PRECISION_FP16 || precision == EHAT_PRECISION_BF16) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_UNSUPPORTED,
        "the CUDA backend does not run in %s yet (fp32 and tf32 only)",
        precision == EHAT_PRECISION_FP16 ? "fp16" : "bf16");
    return NULL;
  }
  e = cudaGetDeviceCount (&count);
  if (e != cudaSuccess || count == 0) {
    (void) cudaGetLastError ();
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_UNSUPPORTED,
        "no CUDA device (%s)", e != cudaSuccess ? cudaGetErrorString (e)
        : "none found");
    return NULL;
  }
  if (device_id < 0 || device_id >= count) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "no CUDA device %d (%d present)", device_id, count);
    return NULL;
  }
  e = cudaGetDeviceProperties (&prop, device_id);
  if (e == cudaSuccess)
    e = cudaDeviceGetAttribute (&major, cudaDevAttrComputeCapabilityMajor,
        device_id);
  if (e == cudaSuccess)
    e = cudaDeviceGetAttribute (&minor, cudaDevAttrComputeCapabilityMinor,
        device_id);
  if (e != cudaSuccess) {
    set_gerror (error, e, "device query");
    return NULL;
  }
  if (major * 10 + minor < 75) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_UNSUPPORTED,
        "CUDA device %d (%s) has compute capability %d.%d; 7.5 or newer is "
        "needed", device_id, prop.name, major, minor);
    return NULL;
  }

  cb = g_new0 (EhatCudaBackend, 1);
  cb->parent.ops = &cuda_ops;
  cb->parent.kind = EHAT_BACKEND_CUDA;
  cb->device = device_id;
  cb->precision = precision == EHAT_PRECISION_TF32 ? EHAT_PRECISION_TF32
      : EHAT_PRECISION_FP32;

  e = cudaSetDevice (device_id);
  if (e == cudaSuccess)
    e = cudaStreamCreateWithFlags (&cb->stream, cudaStreamNonBlocking);
  if (e != cudaSuccess) {
    set_gerror (error, e, "CUDA stream creation");
    cb->stream = NULL;
    cuda_destroy (&cb->parent);
    return NULL;
  }
  st = cublasCreate (&cb->blas);
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasSetStream (cb->blas, cb->stream);
  /* fp32 is the reference: CUBLAS_DEFAULT_MATH keeps fp32 GEMMs in full
   * fp32 (no TF32); tf32 opts in to the tensor-op path. */
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasSetMathMode (cb->blas,
        cb->precision == EHAT_PRECISION_TF32 ? CUBLAS_TF32_TENSOR_OP_MATH
        : CUBLAS_DEFAULT_MATH);
  if (st != CUBLAS_STATUS_SUCCESS) {
    g_set_error (error, EHAT_ERROR, st == CUBLAS_STATUS_ALLOC_FAILED
        ? EHAT_ERROR_OUT_OF_MEMORY : EHAT_ERROR_BACKEND,
        "cuBLAS initialisation failed: %s", cublasGetStatusString (st));
    cuda_destroy (&cb->parent);
    return NULL;
  }
  cb->description = g_strdup_printf ("cuda (device %d: %s, %s)", device_id,
      prop.name, cb->precision == EHAT_PRECISION_TF32 ? "tf32" : "fp32");
  return &cb->parent;
}

/* ---- the module (libehat-cuda.so) ----
 *
 * libehat opens this module on demand and calls its one exported symbol
 * (ehat-core/ehat-backend-module.c checks abi_version and ops_size before
 * using anything else).  Everything else here has hidden visibility. */
static const EhatBackendModule cuda_module = {
  .abi_version = EHAT_BACKEND_ABI_VERSION,
  .ops_size = sizeof (EhatBackendOps),
  .name = "cuda",
  .create = cuda_backend_new,
};

G_MODULE_EXPORT const EhatBackendModule *ehat_backend_module_entry (void);

G_MODULE_EXPORT const EhatBackendModule *
ehat_backend_module_entry (void)
{
  return &cuda_module;
}
