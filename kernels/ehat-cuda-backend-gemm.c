/* The CUDA backend's GEMM operations (ehat-cuda-backend-private.h):
 * convolutions and linear layers through cuBLAS (im2col or row-padding
 * bands, then an epilogue pass) or as one fused kernel each
 * (ehat-cuda-gemm-mma.cu, EHAT_CUDA_GEMM), and the element-wise LayerNorm
 * and axpby beside them. */
#include "ehat-cuda-backend-private.h"

#include <limits.h>

/* ---- bands ----
 *
 * A convolution through cuBLAS needs an im2col band (k·k·cin columns a
 * pixel) and, when its output is padded or pixel-shuffled, an output band;
 * a linear layer with padded dimensions needs its input and output rows
 * widened.  All of them share one scratch buffer (SCR_BAND: no two GEMM
 * operations run at once), and its size is bounded by the activation
 * arena's: an eighth of it, so that the device holds the weights and one
 * batch's activations and little more (the bound), within
 * [BAND_MIN_BYTES, BAND_MAX_BYTES].  At HAT-L's 480×272 in fp16 the arena
 * is 470 MB, the bands 59 MB: a CAB convolution (180 → 60) is 8 GEMMs of
 * 17 k pixels, about a wave of 128-pixel tiles on an H100 each, as with
 * the fixed bands before (2^25 elements for each of four buffers, which
 * held up to 190 MB there).  Below the floor the arena is a few tiles of
 * a few windows, where bands of a few hundred pixels cost little. */
#define BAND_SHARE 8
#define BAND_MIN_BYTES ((gsize) 2 << 20)
#define BAND_MAX_BYTES ((gsize) 128 << 20)

static gsize
band_budget (const EhatCudaBackend *cb)
{
  if (cb->arena_bytes == 0)     /* an operation outside a forward pass */
    return BAND_MAX_BYTES;
  return CLAMP (cb->arena_bytes / BAND_SHARE, BAND_MIN_BYTES,
      BAND_MAX_BYTES);
}

/* Rows (pixels, tokens) a band holds when each takes row_bytes of it: at
 * least one, and all `rows` when the operation needs no band. */
static gsize
band_rows (const EhatCudaBackend *cb, gsize row_bytes, gsize rows)
{
  return row_bytes ? MIN (MAX (band_budget (cb) / row_bytes, 1), rows)
      : rows;
}

/* A convolution's band of at most `band` pixels made to tile each image
 * of hw pixels alike: whole images when one fits, else each image cut
 * into equal parts (the loop in cuda_conv ends a band at each image's
 * end).  So an image's pixels meet the same GEMM shapes at the same
 * columns wherever it sits in a batch: a GEMM library's result for a
 * column may depend on where it falls in the GEMM.  Under the emulator,
 * bands straddling two images put the same image twice in one batch
 * 2.9·10⁻⁶ apart in fp32 (bit-identical when cut per image) and 2·10⁻³ in
 * tf32, which /cuda/narrow's same-image check (≤ 10⁻³) catches;
 * /cuda/deterministic does not. */
static gsize
image_band (gsize band, gsize hw)
{
  gsize parts;

  if (band >= hw)
    return band / hw * hw;
  parts = (hw + band - 1) / band;
  return (hw + parts - 1) / parts;
}

/* The band buffer as two parts, *a of a_bytes then *b of b_bytes (each
 * NULL when empty), b 256-byte aligned as cuBLAS likes.  FALSE (the error
 * recorded) when it cannot grow. */
static gboolean
bands (EhatCudaBackend *cb, gsize a_bytes, void **a, gsize b_bytes, void **b)
{
  gsize off = (a_bytes + 255) & ~(gsize) 255;
  char *p;

  *a = *b = NULL;
  if (a_bytes + b_bytes == 0)
    return TRUE;
  if (!(p = scratch (cb, SCR_BAND, off + b_bytes)))
    return FALSE;
  *a = a_bytes ? p : NULL;
  *b = b_bytes ? p + off : NULL;
  return TRUE;
}

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
  gboolean as_is = cw->k == 1 && kcp == kc;
  gsize eb = (gsize) cb->parent.act_bytes, hw = (gsize) h * w, band;
  /* GEMM output to scratch when it is to be shuffled or has padded rows;
   * else straight into y, where a residual that is y itself enters
   * through the GEMM's beta */
  gboolean via_tmp = shuffle > 1 || coutp != cout;
  gboolean in_place = res && res == y && !via_tmp;
  const float beta = in_place ? alpha : 0.0f;
  void *col, *tmp;

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
  /* cuBLAS's int dimensions bound a band too */
  band = band_rows (cb, ((as_is ? 0 : kcp) + (via_tmp ? coutp : 0)) * eb, m);
  band = MIN (band, (gsize) (INT_MAX / 2) / (gsize) MAX (kcp, coutp));
  band = image_band (band, hw);
  if (!bands (cb, as_is ? 0 : band * kcp * eb, &col,
          via_tmp ? band * coutp * eb : 0, &tmp))
    return;

  for (gsize p0 = 0, np; p0 < m && !cb->error; p0 += np) {
    void *dst = tmp ? tmp : AT (cb, y, p0 * cout);
    const void *B = as_is ? AT (cb, x, p0 * cw->cin) : col;

    np = MIN (band, m - p0);
    if (band < hw)              /* the image's last part */
      np = MIN (np, hw - p0 % hw);

    if (cw->k == 1 && !as_is)
      record_cuda (cb, ehat_cuda_pad_rows (cb->stream, cb->dt,
              AT (cb, x, p0 * cw->cin), np, cw->cin, kcp, col), "conv pad");
    else if (!as_is)
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
  void *xp, *yp;
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
  chunk = MIN (chunk, band_rows (cb, ((pad_in ? kp : 0)
              + (pad_out ? mp : 0)) * eb, rows));
  if (!bands (cb, pad_in ? chunk * kp * eb : 0, &xp,
          pad_out ? chunk * mp * eb : 0, &yp))
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
