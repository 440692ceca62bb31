/* The CUDA backend's state and what its files share.  The backend is one
 * object spread over four files, each with one job:
 *   ehat-cuda-backend.c            errors, device memory, weights, CUDA
 *                                  graphs, the ops table, the constructor
 *                                  and the module entry;
 *   ehat-cuda-backend-gemm.c       convolutions, linear layers (cuBLAS or
 *                                  the fused kernel), LayerNorm, axpby;
 *   ehat-cuda-backend-attention.c  window and OCAB attention, channel
 *                                  attention, DANet;
 *   ehat-cuda-backend-frame.c      planes and video frames in and out.
 * Module-internal: the module is built with hidden visibility, and only
 * its entry point is exported. */
#ifndef EHAT_CUDA_BACKEND_PRIVATE_H
#define EHAT_CUDA_BACKEND_PRIVATE_H

#include "ehat-backend.h"
#include "ehat-cuda.h"

#include <glib.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#define CB(be) ((EhatCudaBackend *) (be))
/* activation pointers advanced by n elements of the storage type */
#define AT(cb, p, n) ((void *) ((char *) (p) + (gsize) (n) \
      * (gsize) (cb)->parent.act_bytes))


typedef enum
{
  SCR_BAND,                     /* one GEMM operation's bands (gemm.c):
                                 * a convolution's im2col band and its
                                 * padded or unshuffled output, or a linear
                                 * layer's padded input and output rows */
  SCR_BIAS,                     /* dense relative-position bias (when the
                                 * index is not separable) */
  SCR_SUMS,                     /* channel-attention partial sums (double) */
  SCR_SCALE,                    /* channel-attention scales */
  SCR_STATS,                    /* DANet PAM row max/sum */
  SCR_GRAM,                     /* DANet CAM c×c matrices (fp32) */
  SCR_GRAM_T,                   /* the same after the softmax, as dt */
  SCR_IN,                       /* planar input staging */
  SCR_OUT,                      /* planar output staging */
  N_SCRATCH
} EhatScratch;

/* Page-locked host staging of frame_input / frame_output: the copies run
 * at the bus's speed (the driver stages pageable memory through a bounce
 * buffer of its own otherwise). */
typedef enum
{
  PIN_IN,
  PIN_OUT,
  N_PINNED
} EhatPinned;

/* An uploaded relative-position index (upload_index), kept on the host
 * until the first attention that uses it has asked whether it is
 * separable (rel_bias). */
typedef struct
{
  gint32 *host;                 /* the index; NULL once analysed */
  gsize n;
  int nq, nk, len, rows;        /* as analysed */
  gint32 *off;                  /* device: qoff [nq], koff [nk]; NULL: not
                                 * separable (the dense bias is used) */
  gint32 *host_off;             /* off's source (the copy is asynchronous) */
} EhatRelIndex;

/* Shapes whose forward body is kept as a CUDA graph (the tiler uses one
 * or two: the full batch and the last one). */
#define MAX_GRAPHS 8

typedef enum
{
  GRAPH_FREE,                   /* unused slot */
  GRAPH_WARM,                   /* ran once eagerly: lazy setup is done */
  GRAPH_READY,                  /* exec holds the recorded body */
  GRAPH_FAILED,                 /* recording failed: always eager */
} EhatGraphState;

typedef struct
{
  EhatGraphState state;
  int n, h, w;
  const void *arena;
  guint64 gen, last_use;
  cudaGraphExec_t exec;
} EhatCudaGraph;

typedef struct
{
  EhatBackend parent;
  int device;
  EhatPrecision precision;
  EhatCudaDtype dt;             /* activation storage type */
  /* GEMM dimensions rounded up to multiples of 8 (fp16/bf16): cuBLAS's
   * tensor-core kernels want 16-byte aligned rows, and HAT-L's 180, 60,
   * 540 and 1620 are not (measured on an H100: 2.5-3× faster GEMMs with
   * zero-padded operands).  EHAT_CUDA_GEMM_PAD=0 turns it off. */
  gboolean pad;
  /* convolutions and linear layers as one fused tensor-core kernel each
   * (ehat-cuda-gemm-mma.cu) instead of copies + cuBLAS + an epilogue pass:
   * EHAT_CUDA_GEMM=fused (both) or conv (convolutions only, where the
   * copies saved are largest), until the GPU benchmark shows which is
   * faster.  Asked for, it must run: a refusal is an error, not a quiet
   * fallback.  Not chosen per layer by timing (cuDNN's benchmark mode):
   * the two paths round differently, and workers of one film must produce
   * the same frames. */
  gboolean fused_conv, fused_linear;
  /* convolutions with at most 8 outputs (the last one) as the direct
   * kernel of ehat-cuda-conv-direct.cu, whatever the GEMM path;
   * EHAT_CUDA_CONV_DIRECT=0 turns it off (A/B) */
  gboolean conv_direct;
  cudaDataType_t ct;            /* the same, for cuBLAS */
  cublasComputeType_t compute;  /* GEMM compute type */
  /* fp32 weights handed to borrow (device pointer → element count), and
   * the narrow copies made of them (device pointer → copy) */
  GHashTable *weights;
  GHashTable *narrow;
  /* relative-position indices (device pointer → EhatRelIndex) */
  GHashTable *rel;
  /* every device allocation (pointer → bytes), what they add up to now
   * and at most (dev_malloc / dev_free) */
  GHashTable *sizes;
  gsize dev_bytes, dev_peak;
  cudaStream_t stream;
  cublasHandle_t blas;
  char *description;
  GError *error;                /* first failure since the last sync */
  void *scratch[N_SCRATCH];
  gsize scratch_bytes[N_SCRATCH];
  /* bytes of the activation arena of the latest forward pass
   * (graph_begin; 0 before any): SCR_BAND stays within a share of it */
  gsize arena_bytes;
  void *pinned[N_PINNED];
  gsize pinned_bytes[N_PINNED];
  /* CUDA graphs of the forward pass's body, one per shape (graph_begin);
   * gen counts device frees: a graph records buffer addresses, so one made
   * before any buffer was freed is stale */
  gboolean graphs_on;
  EhatCudaGraph graphs[MAX_GRAPHS];
  int recording;                /* index being captured, or -1 */
  guint64 gen, clock;
  guint n_recorded, n_replayed, n_failed;
  void *blas_ws;                /* cuBLAS workspace (fixed for capture) */
  /* EHAT_CUDA_PROFILE set: every operation is timed (the stream drained
   * between operations) and a table goes to stderr at destroy */
  GHashTable *prof;             /* op name → EhatProf */
  const char *prof_op;
  gint64 prof_t0;
} EhatCudaBackend;

/* A GEMM dimension as the backend runs it. */
static inline int
gemm_dim (const EhatCudaBackend *cb, int n)
{
  return cb->pad ? (n + 7) & ~7 : n;
}

/* ---- ehat-cuda-backend.c: errors (recorded, reported by sync), memory ---- */

G_GNUC_INTERNAL
void record_cuda (EhatCudaBackend *cb, cudaError_t e, const char *what);
G_GNUC_INTERNAL
void record_blas (EhatCudaBackend *cb, cublasStatus_t st, const char *what);
G_GNUC_INTERNAL
void record_msg (EhatCudaBackend *cb, EhatError code, const char *msg);
G_GNUC_INTERNAL
gboolean enter (EhatCudaBackend *cb, const char *op);
G_GNUC_INTERNAL
cudaError_t dev_malloc (EhatCudaBackend *cb, void **p, gsize bytes);
G_GNUC_INTERNAL
cudaError_t dev_free (EhatCudaBackend *cb, void *p);
G_GNUC_INTERNAL
void *scratch (EhatCudaBackend *cb, EhatScratch slot, gsize bytes);
G_GNUC_INTERNAL
guint8 *pinned (EhatCudaBackend *cb, EhatPinned slot, gsize bytes);
G_GNUC_INTERNAL
const void *as_act (EhatCudaBackend *cb, const float *p);
G_GNUC_INTERNAL
const void *linear_weight (EhatCudaBackend *cb, const EhatLinearW *lw, int kp,
    int mp);

/* ---- ehat-cuda-backend-gemm.c ---- */

G_GNUC_INTERNAL
void gemm (EhatCudaBackend *cb, cublasOperation_t ta, cublasOperation_t tb,
    int m, int n, int k, const void *A, int lda, const void *B, int ldb,
    float beta, void *C, cudaDataType_t ctype, int ldc, long long sa,
    long long sb, long long sc, int batch, const char *what);
G_GNUC_INTERNAL
void cuda_conv (EhatBackend *be, const EhatConvW *cw, const float *x, int n,
    int h, int w, float *y, EhatAct act, const float *res, float alpha,
    int shuffle);
G_GNUC_INTERNAL
void cuda_linear (EhatBackend *be, const EhatLinearW *lw, const float *x,
    gsize rows, float *y, EhatAct act, float beta);
G_GNUC_INTERNAL
void cuda_layernorm (EhatBackend *be, const EhatNormW *nw, const float *x,
    gsize rows, int c, float *y);
G_GNUC_INTERNAL
void cuda_axpby (EhatBackend *be, float *y, float a, const float *x, float b,
    gsize n);

/* ---- ehat-cuda-backend-attention.c ---- */

G_GNUC_INTERNAL
void rel_clear (EhatCudaBackend *cb, EhatRelIndex *ri);
G_GNUC_INTERNAL
void rel_forget (EhatCudaBackend *cb, const void *p);
G_GNUC_INTERNAL
void cuda_window_attention (EhatBackend *be, const float *qkv, int n, int h,
    int w, int c, int heads, int ws, int shift, const float *table,
    const gint32 *index, float *out);
G_GNUC_INTERNAL
void cuda_overlap_attention (EhatBackend *be, const float *qkv, int n, int h,
    int w, int c, int heads, int ws, int wse, const float *table,
    const gint32 *index, float *out);
G_GNUC_INTERNAL
void cuda_channel_attention (EhatBackend *be, const EhatLinearW *down,
    const EhatLinearW *up, float *v, int n, gsize hw, int c);
G_GNUC_INTERNAL
void cuda_channel_attention_add (EhatBackend *be, const EhatLinearW *down,
    const EhatLinearW *up, const float *v, int n, gsize hw, int c, float w0,
    const float *x0, float alpha, float w1, float *t);
G_GNUC_INTERNAL
void cuda_position_attention (EhatBackend *be, const float *q, const float *k,
    const float *v, int n, gsize hw, int dq, int c, float gamma, float *out);
G_GNUC_INTERNAL
void cuda_channel_gram_attention (EhatBackend *be, const float *f, int n,
    gsize hw, int c, float gamma, float *out);

/* ---- ehat-cuda-backend-frame.c ---- */

G_GNUC_INTERNAL
void cuda_input (EhatBackend *be, const float *host, int n, int w, int h,
    int W, int H, const float mean[3], float range, float *x);
G_GNUC_INTERNAL
void cuda_output (EhatBackend *be, const float *x, int n, int W, int H, int w,
    int h, const float mean[3], float range, float *host);
G_GNUC_INTERNAL
void cuda_frame_input (EhatBackend *be, const EhatFrame *frame,
    const EhatFrameDesc *d, int W, int H, const float mean[3], float range,
    float *x);
G_GNUC_INTERNAL
void cuda_frame_output (EhatBackend *be, const float *x, int W, int H,
    const float mean[3], float range, const EhatFrameDesc *d, EhatFrame *frame,
    const EhatFrameDesc *alpha_from);

#endif /* EHAT_CUDA_BACKEND_PRIVATE_H */
