/* The CUDA backend's GEMM operations (ehat-cuda-backend-private.h):
 * convolutions and linear layers through cuBLAS (im2col or row-padding
 * bands, then an epilogue pass) or as one fused kernel each
 * (ehat-cuda-gemm-mma.cu, EHAT_CUDA_GEMM), and the element-wise LayerNorm
 * and axpby beside them. */
#include "ehat-cuda-backend-private.h"

#include <limits.h>

/* im2col bands of at most this many elements (128 MiB in fp32, 64 MiB in
 * fp16/bf16): few enough GEMMs per convolution that each is large (a
 * HAT-L CAB convolution at 480×272 is 4 bands in fp16) */
#define BAND_FLOATS ((gsize) 1 << 25)

/* ---- GEMMs ----
 *
 * Column-major C[m×n] = α·op(A)·op(B) + β·C in the backend's storage type
 * with fp32 accumulation (cublasGemmEx): FP32 compute for fp32 (the handle's
 * default math mode keeps it free of TF32), FAST_TF32 for tf32, and fp16 /
 * bf16 operands on tensor cores for those.  ctype: C's type (the CAM Gram
 * matrices are fp32 whatever the storage). */
void
gemm (EhatCudaBackend *cb, cublasOperation_t ta, cublasOperation_t tb,
    int m, int n, int k, const void *A, int lda, const void *B, int ldb,
    float beta, void *C, cudaDataType_t ctype, int ldc, long long sa,
    long long sb, long long sc, int batch, const char *what)
{
  const float one = 1.0f;

  if (cb->error || !A || !B)
    return;
  if (batch == 1)
    record_blas (cb, cublasGemmEx (cb->blas, ta, tb, m, n, k, &one, A, cb->ct,
            lda, B, cb->ct, ldb, &beta, C, ctype, ldc, cb->compute,
            CUBLAS_GEMM_DEFAULT), what);
  else
    record_blas (cb, cublasGemmStridedBatchedEx (cb->blas, ta, tb, m, n, k,
            &one, A, cb->ct, lda, sa, B, cb->ct, ldb, sb, &beta, C, ctype,
            ldc, sc, batch, cb->compute, CUBLAS_GEMM_DEFAULT), what);
}

/* The fused kernel, asked for (cb->fused_*): a refusal would mean this
 * backend set it up wrongly (weights unpadded or misaligned), so it is an
 * error rather than a silent fallback that would leave the benchmark
 * timing the other path. */
static void
fused_gemm (EhatCudaBackend *cb, const EhatCudaGemm *g, const char *what)
{
  cudaError_t e = ehat_cuda_gemm_fused (cb->stream, cb->dt, g);

  if (e == cudaErrorNotSupported)
    record_msg (cb, EHAT_ERROR_BACKEND, "EHAT_CUDA_GEMM: the fused GEMM "
        "kernel refused this layer");
  else
    record_cuda (cb, e, what);
}

/* ---- convolution: im2col bands + GEMM + epilogue ---- */

/* Column-major GEMM over row-major data: C[rows][ncol] = A[rows][k] ·
 * B[k][ncol] is, column-major, Cᵀ = Bᵀ·Aᵀ. */
void
cuda_conv (EhatBackend *be, const EhatConvW *cw, const float *x, int n,
    int h, int w, float *y, EhatAct act, const float *res, float alpha,
    int shuffle)
{
  EhatCudaBackend *cb = CB (be);
  gsize m = (gsize) n * h * w;
  int kc = cw->k * cw->k * cw->cin, cout = cw->cout;
  int kcp = gemm_dim (cb, kc), coutp = gemm_dim (cb, cout);
  /* a 1×1 conv reads x as it is, unless its rows need padding */
  gboolean direct = cw->k == 1 && kcp == kc;
  gsize band = direct ? (gsize) (INT_MAX / 2) / (gsize) MAX (kcp, coutp)
      : MAX (BAND_FLOATS / (gsize) kcp, 1);
  gsize eb = (gsize) cb->parent.act_bytes;
  /* GEMM output to scratch when it is to be shuffled or has padded rows;
   * else straight into y, where a residual that is y itself enters
   * through the GEMM's beta */
  gboolean via_tmp = shuffle > 1 || coutp != cout;
  gboolean in_place = res && res == y && !via_tmp;
  const float beta = in_place ? alpha : 0.0f;
  void *col = NULL, *tmp = NULL;

  if (!enter (cb, "conv") || m == 0)
    return;
  /* ≤ 8 outputs: ehat-cuda-conv-direct.cu, which refuses the rest */
  if (cb->conv_direct && shuffle <= 1) {
    EhatCudaConvDirect d = { x, m, h, w, cw->cin, cw->k, cw->w,
      cb->dt == EHAT_CUDA_F32 ? coutp : kcp, cb->dt != EHAT_CUDA_F32, cout,
      cw->b, act, res, res ? alpha : 0.0f, y
    };
    cudaError_t e = ehat_cuda_conv_direct (cb->stream, cb->dt, &d);

    if (e != cudaErrorNotSupported) {
      record_cuda (cb, e, "direct conv");
      return;
    }
  }
  if (cb->fused_conv) {
    EhatCudaGemm g = { x, m, h, w, cw->cin, cw->k, cw->w, kcp, cout, cw->b,
      act, res, res ? alpha : 0.0f, MAX (shuffle, 1), y
    };
    fused_gemm (cb, &g, "fused conv");
    return;
  }
  band = MIN (band, m);
  band = MIN (band, (gsize) (INT_MAX / 2) / (gsize) coutp);
  if (via_tmp)
    band = MIN (band, BAND_FLOATS / (gsize) coutp + 1);
  if (!direct && !(col = scratch (cb, SCR_COL, band * kcp * eb)))
    return;
  if (via_tmp && !(tmp = scratch (cb, SCR_TMP, band * coutp * eb)))
    return;

  for (gsize p0 = 0; p0 < m && !cb->error; p0 += band) {
    gsize np = MIN (band, m - p0);
    void *dst = tmp ? tmp : AT (cb, y, p0 * cout);
    const void *B = direct ? AT (cb, x, p0 * cw->cin) : col;

    if (cw->k == 1 && !direct)
      record_cuda (cb, ehat_cuda_pad_rows (cb->stream, cb->dt,
              AT (cb, x, p0 * cw->cin), np, cw->cin, kcp, col), "conv pad");
    else if (!direct)
      record_cuda (cb, ehat_cuda_im2col (cb->stream, cb->dt, x, h, w,
              cw->cin, cw->k, p0, np, kcp, col), "im2col");
    if (cb->dt == EHAT_CUDA_F32)
      gemm (cb, CUBLAS_OP_N, CUBLAS_OP_N, coutp, (int) np, kcp, cw->w, coutp,
          B, kcp, beta, dst, cb->ct, coutp, 0, 0, 0, 1, "conv GEMM");
    else
      gemm (cb, CUBLAS_OP_T, CUBLAS_OP_N, coutp, (int) np, kcp, cw->w, kcp,
          B, kcp, beta, dst, cb->ct, coutp, 0, 0, 0, 1, "conv GEMM");
    if (cb->error)
      break;
    if (shuffle > 1)
      record_cuda (cb, ehat_cuda_bias_act_shuffle (cb->stream, cb->dt, tmp,
              coutp, p0, np, h, w, cout, shuffle, cw->b, act, res, alpha, y),
          "conv shuffle epilogue");
    else
      record_cuda (cb, ehat_cuda_bias_act (cb->stream, cb->dt, dst, coutp,
              AT (cb, y, p0 * cout), np, cout, cw->b, act,
              res && !in_place ? AT (cb, res, p0 * cout) : NULL, alpha),
          "conv epilogue");
  }
}

/* Rows of a linear layer per GEMM when its operands are padded (bounds
 * the padding scratch: 64 Ki rows). */
#define LINEAR_BAND ((gsize) 1 << 16)

/* y = act(x·Wᵀ + b) + beta·y: column-major yᵀ = W·xᵀ with W's row-major
 * [out][in] buffer read transposed.  Padded dimensions (gemm_dim) go
 * through scratch: x's rows widened with zeros, the output's narrowed by
 * the epilogue. */
void
cuda_linear (EhatBackend *be, const EhatLinearW *lw, const float *x,
    gsize rows, float *y, EhatAct act, float beta)
{
  EhatCudaBackend *cb = CB (be);
  int kp = gemm_dim (cb, lw->in), mp = gemm_dim (cb, lw->out);
  gboolean pad_in = kp != lw->in, pad_out = mp != lw->out;
  gsize chunk = (gsize) (INT_MAX / 2) / (gsize) MAX (kp, mp);
  gsize eb = (gsize) cb->parent.act_bytes;
  void *xp = NULL, *yp = NULL;
  const void *W;

  if (!enter (cb, "linear") || rows == 0
      || !(W = linear_weight (cb, lw, kp, mp)))
    return;
  if (cb->fused_linear) {
    EhatCudaGemm g = { x, rows, 1, 1, lw->in, 1, W, kp, lw->out, lw->b, act,
      beta != 0.0f ? y : NULL, beta, 1, y
    };
    fused_gemm (cb, &g, "fused linear");
    return;
  }
  if (pad_in || pad_out)
    chunk = MIN (chunk, LINEAR_BAND);
  chunk = MIN (chunk, rows);
  if (pad_in && !(xp = scratch (cb, SCR_XPAD, chunk * kp * eb)))
    return;
  if (pad_out && !(yp = scratch (cb, SCR_YPAD, chunk * mp * eb)))
    return;
  for (gsize r0 = 0; r0 < rows && !cb->error; r0 += chunk) {
    gsize nr = MIN (chunk, rows - r0);
    const void *X = AT (cb, x, r0 * lw->in);
    void *Y = AT (cb, y, r0 * lw->out);

    if (pad_in) {
      record_cuda (cb, ehat_cuda_pad_rows (cb->stream, cb->dt, X, nr,
              lw->in, kp, xp), "linear pad");
      X = xp;
    }
    gemm (cb, CUBLAS_OP_T, CUBLAS_OP_N, mp, (int) nr, kp, W, kp, X, kp,
        pad_out ? 0.0f : beta, pad_out ? yp : Y, cb->ct, mp, 0, 0, 0, 1,
        "linear GEMM");
    if (!cb->error && pad_out)
      record_cuda (cb, ehat_cuda_bias_act (cb->stream, cb->dt, yp, mp, Y, nr,
              lw->out, lw->b, act, beta != 0.0f ? Y : NULL, beta),
          "linear epilogue");
  }
  if (!cb->error && !pad_out && (lw->b || act != EHAT_ACT_NONE))
    record_cuda (cb, ehat_cuda_bias_act (cb->stream, cb->dt, y, lw->out, y,
            rows, lw->out, lw->b, act, NULL, 0.0f), "linear epilogue");
}

void
cuda_layernorm (EhatBackend *be, const EhatNormW *nw, const float *x,
    gsize rows, int c, float *y)
{
  EhatCudaBackend *cb = CB (be);

  if (enter (cb, "layernorm"))
    record_cuda (cb, ehat_cuda_layernorm (cb->stream, cb->dt, x, rows, c,
            nw->w, nw->b, y), "layernorm");
}

void
cuda_axpby (EhatBackend *be, float *y, float a, const float *x, float b,
    gsize n)
{
  EhatCudaBackend *cb = CB (be);
  const void *xa;

  /* x may be a weight (the absolute position embedding) */
  if (enter (cb, "axpby") && (xa = as_act (cb, x)))
    record_cuda (cb, ehat_cuda_axpby (cb->stream, cb->dt, y, a, xa, b, n),
        "axpby");
}
