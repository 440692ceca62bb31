/* The CUDA backend: every operation of EhatBackendOps (ehat-backend.h) on
 * one CUDA stream per backend instance, GEMMs through cuBLAS, the rest in
 * the kernels of this directory (ehat-cuda.h).  Built with them into the
 * module libehat-cuda.so, which libehat opens on demand
 * (ehat-core/ehat-backend-module.c; the entry is at the end of this file).
 *
 * Precisions: fp32 (the reference path, no TF32), tf32 (cuBLAS TF32
 * tensor ops for the GEMMs, fp32 storage), fp16 and bf16 (activations
 * stored in that type, act_bytes 2; GEMMs on tensor cores with fp32
 * accumulation; every other kernel computes in fp32).  Weights stay fp32
 * on the device (biases, norms, bias tables and the channel-attention MLP
 * use them so); GEMM weights get a narrow copy: convolutions at
 * upload_conv, linear weights at their first use (cached per weight, like
 * the CPU backend's packing).
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
/* activation pointers advanced by n elements of the storage type */
#define AT(cb, p, n) ((void *) ((char *) (p) + (gsize) (n) \
      * (gsize) (cb)->parent.act_bytes))

/* im2col bands of at most this many elements (128 MiB in fp32, 64 MiB in
 * fp16/bf16): few enough GEMMs per convolution that each is large (a
 * HAT-L CAB convolution at 480×272 is 4 bands in fp16) */
#define BAND_FLOATS ((gsize) 1 << 25)

typedef enum
{
  SCR_COL,                      /* im2col band (or a padded 1×1 input) */
  SCR_TMP,                      /* conv output band, padded or to shuffle */
  SCR_XPAD,                     /* linear input band, rows padded */
  SCR_YPAD,                     /* linear output band, rows padded */
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

typedef struct
{
  gint64 us;
  guint calls;
} EhatProf;

/* A GEMM dimension as the backend runs it. */
static inline int
gemm_dim (const EhatCudaBackend *cb, int n)
{
  return cb->pad ? (n + 7) & ~7 : n;
}

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

/* Closes the profiled operation in progress (waits for it). */
static void
prof_close (EhatCudaBackend *cb)
{
  EhatProf *p;

  if (!cb->prof || !cb->prof_op)
    return;
  cudaStreamSynchronize (cb->stream);
  if (!(p = g_hash_table_lookup (cb->prof, cb->prof_op))) {
    p = g_new0 (EhatProf, 1);
    g_hash_table_insert (cb->prof, (gpointer) cb->prof_op, p);
  }
  p->us += g_get_monotonic_time () - cb->prof_t0;
  p->calls++;
  cb->prof_op = NULL;
}

static gint
prof_cmp (gconstpointer a, gconstpointer b, gpointer prof)
{
  const EhatProf *pa = g_hash_table_lookup (prof, *(char **) a);
  const EhatProf *pb = g_hash_table_lookup (prof, *(char **) b);
  return pa->us < pb->us ? 1 : pa->us > pb->us ? -1 : 0;
}

static void
prof_report (EhatCudaBackend *cb)
{
  g_autofree gpointer *keys = NULL;
  guint n = 0;
  gint64 total = 0;

  prof_close (cb);
  keys = g_hash_table_get_keys_as_array (cb->prof, &n);
  g_qsort_with_data (keys, n, sizeof (gpointer), prof_cmp, cb->prof);
  for (guint i = 0; i < n; i++)
    total += ((EhatProf *) g_hash_table_lookup (cb->prof, keys[i]))->us;
  g_printerr ("ehat CUDA profile (%s): %.1f ms in operations\n",
      cb->description, total / 1000.0);
  for (guint i = 0; i < n; i++) {
    const EhatProf *p = g_hash_table_lookup (cb->prof, keys[i]);
    g_printerr ("  %-24s %9.1f ms %5.1f %% %7u calls\n", (char *) keys[i],
        p->us / 1000.0, total ? 100.0 * p->us / total : 0.0, p->calls);
  }
}

/* At the start of every operation: skip work after a failure, and make the
 * backend's device current in the calling thread. */
static gboolean
enter (EhatCudaBackend *cb, const char *op)
{
  if (cb->prof) {
    prof_close (cb);
    cb->prof_op = op;
    cb->prof_t0 = g_get_monotonic_time ();
  }
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

/* Every device allocation goes through these two, so that the backend
 * can say what it holds (ehat_engine_get_device_memory, `ehat bench`). */
static cudaError_t
dev_malloc (EhatCudaBackend *cb, void **p, gsize bytes)
{
  cudaError_t e;

  /* a graph may not depend on memory allocated while it is recorded (the
   * body is recorded only after it ran once, so nothing lazy is left) */
  if (cb->recording >= 0) {
    *p = NULL;
    return cudaErrorStreamCaptureUnsupported;
  }
  e = cudaMalloc (p, bytes);

  if (e == cudaSuccess) {
    g_hash_table_insert (cb->sizes, *p, GSIZE_TO_POINTER (bytes));
    cb->dev_bytes += bytes;
    cb->dev_peak = MAX (cb->dev_peak, cb->dev_bytes);
  }
  return e;
}

static cudaError_t
dev_free (EhatCudaBackend *cb, void *p)
{
  gpointer n;

  if (!p)
    return cudaSuccess;
  cb->gen++;                    /* graphs recorded before now are stale */
  if (g_hash_table_lookup_extended (cb->sizes, p, NULL, &n)) {
    cb->dev_bytes -= GPOINTER_TO_SIZE (n);
    g_hash_table_remove (cb->sizes, p);
  }
  return cudaFree (p);
}

static void
cuda_device_memory (EhatBackend *be, gsize *now, gsize *peak)
{
  *now = CB (be)->dev_bytes;
  *peak = CB (be)->dev_peak;
}

/* *buf (*have bytes) grown to at least `bytes`, in device memory or, with
 * host, page-locked host memory: only after the stream has drained (queued
 * work may still use the old buffer), and never while a graph is being
 * recorded (the graph would keep the old address). */
static void *
grow (EhatCudaBackend *cb, void **buf, gsize *have, gsize bytes,
    gboolean host)
{
  void *p = NULL;
  cudaError_t e;

  if (bytes <= *have && *buf)
    return *buf;
  if (cb->recording >= 0) {
    record_cuda (cb, cudaErrorStreamCaptureUnsupported,
        host ? "pinned growth" : "scratch growth");
    return NULL;
  }
  if (*buf) {
    record_cuda (cb, cudaStreamSynchronize (cb->stream),
        host ? "pinned" : "scratch");
    if (host)
      cudaFreeHost (*buf);
    else
      dev_free (cb, *buf);
    *buf = NULL;
    *have = 0;
  }
  bytes = (MAX (bytes, 1) + 0xfffff) & ~(gsize) 0xfffff;
  e = host ? cudaMallocHost (&p, bytes) : dev_malloc (cb, &p, bytes);
  if (e != cudaSuccess) {
    record_cuda (cb, e, host ? "pinned allocation" : "scratch allocation");
    return NULL;
  }
  *buf = p;
  *have = bytes;
  return p;
}

/* A device scratch buffer of at least `bytes`, grown on demand. */
static void *
scratch (EhatCudaBackend *cb, EhatScratch slot, gsize bytes)
{
  return grow (cb, &cb->scratch[slot], &cb->scratch_bytes[slot], bytes,
      FALSE);
}

/* A page-locked host buffer of at least `bytes`, grown on demand.  Only
 * frame_input and frame_output use them, and a forward pass ends by
 * draining the stream (output), so no copy from or to the old one is
 * pending when it is replaced or written. */
static guint8 *
pinned (EhatCudaBackend *cb, EhatPinned slot, gsize bytes)
{
  return grow (cb, &cb->pinned[slot], &cb->pinned_bytes[slot], bytes, TRUE);
}

/* ---- lifetime ---- */

static void
graph_drop (EhatCudaGraph *g)
{
  if (g->exec)
    cudaGraphExecDestroy (g->exec);
  memset (g, 0, sizeof *g);
}


static void
rel_clear (EhatCudaBackend *cb, EhatRelIndex *ri)
{
  dev_free (cb, ri->off);
  g_free (ri->host);
  g_free (ri->host_off);
}

static void
cuda_destroy (EhatBackend *be)
{
  EhatCudaBackend *cb = CB (be);

  cudaSetDevice (cb->device);
  if (cb->prof) {
    prof_report (cb);
    g_hash_table_destroy (cb->prof);
  }
  if (cb->stream)
    cudaStreamSynchronize (cb->stream);
  for (int i = 0; i < MAX_GRAPHS; i++)
    graph_drop (&cb->graphs[i]);
  for (int i = 0; i < N_SCRATCH; i++)
    if (cb->scratch[i])
      dev_free (cb, cb->scratch[i]);
  for (int i = 0; i < N_PINNED; i++)
    if (cb->pinned[i])
      cudaFreeHost (cb->pinned[i]);
  if (cb->rel) {
    GHashTableIter it;
    EhatRelIndex *ri;
    g_hash_table_iter_init (&it, cb->rel);
    while (g_hash_table_iter_next (&it, NULL, (gpointer *) &ri))
      rel_clear (cb, ri);
    g_hash_table_destroy (cb->rel);
  }
  if (cb->narrow) {
    GHashTableIter it;
    gpointer copy;
    g_hash_table_iter_init (&it, cb->narrow);
    while (g_hash_table_iter_next (&it, NULL, &copy))
      dev_free (cb, copy);
    g_hash_table_destroy (cb->narrow);
  }
  if (cb->blas)
    cublasDestroy (cb->blas);
  dev_free (cb, cb->blas_ws);
  g_debug ("%s: CUDA graphs: %u recorded, %u replays, %u failed",
      cb->description, cb->n_recorded, cb->n_replayed, cb->n_failed);
  if (cb->weights)
    g_hash_table_destroy (cb->weights);
  if (cb->sizes)
    g_hash_table_destroy (cb->sizes);
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
  e = dev_malloc (cb, &p, MAX (n, 1) * sizeof (float));
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

/* Drops what rel_bias keeps about index p (the stream is idle). */
static void
rel_forget (EhatCudaBackend *cb, const void *p)
{
  EhatRelIndex *ri = cb->rel ? g_hash_table_lookup (cb->rel, p) : NULL;

  if (ri) {
    rel_clear (cb, ri);
    g_hash_table_remove (cb->rel, p);
  }
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
  rel_forget (cb, p);
  record_cuda (cb, dev_free (cb, p), "cudaFree");
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
    dev_free (cb, p);
    return NULL;
  }
  return p;
}

static float *
cuda_upload (EhatBackend *be, const float *host, gsize n, GError **error)
{
  return upload_bytes (CB (be), host, n * sizeof (float), error);
}

static float *
cuda_borrow (EhatBackend *be, const float *host, gsize n, GError **error)
{
  EhatCudaBackend *cb = CB (be);
  float *p = cuda_upload (be, host, n, error);

  if (p && cb->weights)
    g_hash_table_insert (cb->weights, p, GSIZE_TO_POINTER (n));
  return p;
}

static void
cuda_unborrow (EhatBackend *be, float *p)
{
  EhatCudaBackend *cb = CB (be);
  void *copy;

  if (cb->narrow && (copy = g_hash_table_lookup (cb->narrow, p))) {
    g_hash_table_remove (cb->narrow, p);
    cuda_free (be, copy);
  }
  if (cb->weights)
    g_hash_table_remove (cb->weights, p);
  cuda_free (be, p);
}

/* The activation-typed copy of a borrowed fp32 weight (converted once, on
 * the stream, at first use); p itself in fp32/tf32 or when p is not a
 * borrowed weight (then it is an activation buffer already).  NULL after
 * recording an allocation failure. */
static const void *
as_act (EhatCudaBackend *cb, const float *p)
{
  gpointer n, copy;
  void *d = NULL;
  cudaError_t e;

  if (cb->dt == EHAT_CUDA_F32 || !p
      || !g_hash_table_lookup_extended (cb->weights, p, NULL, &n))
    return p;
  if ((copy = g_hash_table_lookup (cb->narrow, p)))
    return copy;
  e = dev_malloc (cb, &d, MAX (GPOINTER_TO_SIZE (n), 1)
      * cb->parent.act_bytes);
  if (e != cudaSuccess) {
    record_cuda (cb, e, "narrow weight copy");
    return NULL;
  }
  record_cuda (cb, ehat_cuda_convert (cb->stream, p, GPOINTER_TO_SIZE (n),
          cb->dt, d), "weight conversion");
  g_hash_table_insert (cb->narrow, (gpointer) p, d);
  return d;
}

static gint32 *
cuda_upload_index (EhatBackend *be, const gint32 *host, gsize n,
    GError **error)
{
  EhatCudaBackend *cb = CB (be);
  gint32 *d = upload_bytes (cb, host, n * sizeof (gint32), error);
  EhatRelIndex *ri;

  /* the attention's shapes say how to read it: rel_bias looks at it then */
  if (d) {
    ri = g_new0 (EhatRelIndex, 1);
    ri->host = g_memdup2 (host, n * sizeof (gint32));
    ri->n = n;
    g_hash_table_insert (cb->rel, d, ri);
  }
  return d;
}

/* [cout, cin, k, k] → in fp32, [(ky·k + kx)·cin + ci][cout], the im2col
 * order (the CPU backend's layout): row-major K×N for the GEMM; in fp16 /
 * bf16, [cout][(ky·k + kx)·cin + ci] zero-padded to [coutp][kcp], the
 * layout of a linear layer's weight (each output channel's K contiguous,
 * as the fused kernel's B operand wants it; cuBLAS reads it transposed). */
static float *
cuda_upload_conv (EhatBackend *be, const float *w, int cout, int cin, int k,
    GError **error)
{
  EhatCudaBackend *cb = CB (be);
  gsize kk = (gsize) k * k, n = kk * cin * cout;
  g_autofree float *p = g_try_new (float, MAX (n, 1));
  float *f32, *narrow;
  int kcp, coutp;
  cudaError_t e;

  if (!p) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY,
        "out of host memory repacking a convolution");
    return NULL;
  }

  for (int co = 0; co < cout; co++)
    for (int ci = 0; ci < cin; ci++)
      for (gsize t = 0; t < kk; t++) {
        gsize kc = t * cin + ci;
        p[cb->dt == EHAT_CUDA_F32 ? kc * cout + co : co * kk * cin + kc] =
            w[((gsize) co * cin + ci) * kk + t];
      }
  f32 = upload_bytes (cb, p, n * sizeof (float), error);
  if (!f32 || cb->dt == EHAT_CUDA_F32)
    return f32;
  /* GEMM operand in the activation type, [cout][kc] zero-padded to the
   * GEMM's dimensions: converted here, once */
  kcp = gemm_dim (cb, (int) (kk * cin));
  coutp = gemm_dim (cb, cout);
  narrow = cuda_alloc (be, ((gsize) kcp * coutp * cb->parent.act_bytes + 3)
      / 4, error);
  if (narrow) {
    e = ehat_cuda_convert_pad (cb->stream, f32, cout, (int) (kk * cin),
        coutp, kcp, cb->dt, narrow);
    if (e == cudaSuccess)
      e = cudaStreamSynchronize (cb->stream);
    if (e != cudaSuccess) {
      set_gerror (error, e, "convolution weight conversion");
      dev_free (cb, narrow);
      narrow = NULL;
    }
  }
  dev_free (cb, f32);
  return narrow;
}

/* A linear layer's [out][in] converted to the storage type and
 * zero-padded to [mp][kp], on the stream; NULL after recording an
 * allocation failure. */
static void *
linear_copy (EhatCudaBackend *cb, const EhatLinearW *lw, int kp, int mp)
{
  void *d = NULL;
  cudaError_t e;

  e = dev_malloc (cb, &d, MAX ((gsize) kp * mp, 1) * cb->parent.act_bytes);
  if (e != cudaSuccess) {
    record_cuda (cb, e, "linear weight copy");
    return NULL;
  }
  record_cuda (cb, ehat_cuda_convert_pad (cb->stream, lw->w, lw->out, lw->in,
          mp, kp, cb->dt, d), "linear weight conversion");
  return d;
}

/* The GEMM operand of a linear layer: W itself in fp32/tf32, else its
 * narrow copy: the one prepare_linear made, or (a layer handed to
 * linear() without it, as the op tests do) one made at first use and
 * cached like as_act's copies. */
static const void *
linear_weight (EhatCudaBackend *cb, const EhatLinearW *lw, int kp, int mp)
{
  void *d;

  if (cb->dt == EHAT_CUDA_F32)
    return lw->w;
  if (lw->prepared)
    return lw->prepared;
  if ((d = g_hash_table_lookup (cb->narrow, lw->w)))
    return d;
  if ((d = linear_copy (cb, lw, kp, mp)))
    g_hash_table_insert (cb->narrow, lw->w, d);
  return d;
}

/* Linear weights get their GEMM copy at load rather than at first use, so
 * that processing allocates no weights.  In fp16/bf16 the GEMMs read that
 * copy alone, so the fp32 weight goes back: the device then holds each
 * GEMM weight once, in 2 bytes a parameter (HAT-L: 87 MB less). */
static gboolean
cuda_prepare_linear (EhatBackend *be, EhatLinearW *lw, GError **error)
{
  EhatCudaBackend *cb = CB (be);
  void *d;

  lw->prepared = NULL;
  if (cb->dt == EHAT_CUDA_F32)
    return TRUE;
  d = linear_copy (cb, lw, gemm_dim (cb, lw->in), gemm_dim (cb, lw->out));
  /* the conversion reads w: done before w is freed */
  if (d && !cb->error)
    record_cuda (cb, cudaStreamSynchronize (cb->stream),
        "linear weight conversion");
  if (cb->error) {
    dev_free (cb, d);
    g_propagate_error (error, g_steal_pointer (&cb->error));
    return FALSE;
  }
  lw->prepared = d;
  cuda_unborrow (be, lw->w);
  lw->w = NULL;
  return TRUE;
}

static void
cuda_release_linear (EhatBackend *be, EhatLinearW *lw)
{
  cuda_free (be, lw->prepared);
  lw->prepared = NULL;
}

/* ---- input / output ---- */

static void
cuda_input (EhatBackend *be, const float *host, int n, int w, int h, int W,
    int H, const float mean[3], float range, float *x)
{
  EhatCudaBackend *cb = CB (be);
  gsize bytes = (gsize) n * 3 * h * w * sizeof (float);
  float *stage;

  if (!enter (cb, "input") || !(stage = scratch (cb, SCR_IN, bytes)))
    return;
  record_cuda (cb, cudaMemcpyAsync (stage, host, bytes,
          cudaMemcpyHostToDevice, cb->stream), "input copy");
  if (!cb->error)
    record_cuda (cb, ehat_cuda_input (cb->stream, cb->dt, stage, n, w, h, W,
            H, mean[0], mean[1], mean[2], range, x), "input");
}

static void
cuda_output (EhatBackend *be, const float *x, int n, int W, int H, int w,
    int h, const float mean[3], float range, float *host)
{
  EhatCudaBackend *cb = CB (be);
  gsize bytes = (gsize) n * 3 * h * w * sizeof (float);
  float *stage;

  if (!enter (cb, "output") || !(stage = scratch (cb, SCR_OUT, bytes)))
    return;
  record_cuda (cb, ehat_cuda_output (cb->stream, cb->dt, x, n, W, H, w, h,
          mean[0], mean[1], mean[2], range, stage), "output");
  if (!cb->error)
    record_cuda (cb, cudaMemcpyAsync (host, stage, bytes,
            cudaMemcpyDeviceToHost, cb->stream), "output copy");
  /* the caller owns `host` as soon as we return */
  if (!cb->error)
    record_cuda (cb, cudaStreamSynchronize (cb->stream), "output");
}

/* Where each plane of a frame sits in a staging buffer, rows packed
 * (each plane 256-byte aligned); the total size. */
static gsize
frame_layout (const EhatFrameDesc *d, gsize off[3])
{
  gsize total = 0;

  for (int p = 0; p < 3; p++) {
    off[p] = total;
    if (p < d->n_planes)
      total += ((gsize) d->row_bytes[p] * d->rows[p] + 255) & ~(gsize) 255;
  }
  return total;
}

static void
frame_planes (const EhatFrameDesc *d, guint8 *base, const gsize off[3],
    guint8 *planes[3], int strides[3])
{
  for (int p = 0; p < 3; p++) {
    planes[p] = p < d->n_planes ? base + off[p] : base;
    strides[p] = p < d->n_planes ? d->row_bytes[p] : 0;
  }
}

/* Rows between a frame's planes (strided) and packed staging. */
static void
frame_copy (const EhatFrameDesc *d, guint8 *const dst[3],
    const int dst_stride[3], guint8 *const src[3], const int src_stride[3])
{
  for (int p = 0; p < d->n_planes; p++) {
    gsize row = d->row_bytes[p];

    if ((gsize) dst_stride[p] == row && (gsize) src_stride[p] == row)
      memcpy (dst[p], src[p], row * d->rows[p]);
    else
      for (int y = 0; y < d->rows[p]; y++)
        memcpy (dst[p] + (gsize) y * dst_stride[p],
            src[p] + (gsize) y * src_stride[p], row);
  }
}

static void
cuda_frame_input (EhatBackend *be, const EhatFrame *frame,
    const EhatFrameDesc *d, int W, int H, const float mean[3], float range,
    float *x)
{
  EhatCudaBackend *cb = CB (be);
  gsize off[3], total = frame_layout (d, off);
  guint8 *host, *dev, *hp[3], *dp[3];
  int hs[3], ds[3];

  if (!enter (cb, "frame input") || !(host = pinned (cb, PIN_IN, total))
      || !(dev = scratch (cb, SCR_IN, total)))
    return;
  frame_planes (d, host, off, hp, hs);
  frame_planes (d, dev, off, dp, ds);
  frame_copy (d, hp, hs, frame->data, frame->stride);
  record_cuda (cb, cudaMemcpyAsync (dev, host, total, cudaMemcpyHostToDevice,
          cb->stream), "frame input copy");
  if (!cb->error)
    record_cuda (cb, ehat_cuda_frame_input (cb->stream, cb->dt, d, dp, ds, W,
            H, mean[0], mean[1], mean[2], range, x), "frame input");
}

static void
cuda_frame_output (EhatBackend *be, const float *x, int W, int H,
    const float mean[3], float range, const EhatFrameDesc *d,
    EhatFrame *frame, const EhatFrameDesc *alpha_from)
{
  EhatCudaBackend *cb = CB (be);
  gsize off[3], total = frame_layout (d, off);
  guint8 *host, *dev, *hp[3], *dp[3];
  int hs[3], ds[3];

  (void) H;
  if (!enter (cb, "frame output") || !(host = pinned (cb, PIN_OUT, total))
      || !(dev = scratch (cb, SCR_OUT, total)))
    return;
  if (alpha_from && (alpha_from->a < 0 || !cb->scratch[SCR_IN])) {
    record_cuda (cb, cudaErrorInvalidValue, "frame output (no alpha input)");
    return;
  }
  frame_planes (d, host, off, hp, hs);
  frame_planes (d, dev, off, dp, ds);
  /* a packed input frame with alpha is still in the input staging, as
   * frame_input left it (its plane 0 first, rows packed) */
  record_cuda (cb, ehat_cuda_frame_output (cb->stream, cb->dt, x, W, mean[0],
          mean[1], mean[2], range, d, dp, ds, alpha_from,
          alpha_from ? cb->scratch[SCR_IN] : NULL), "frame output");
  if (!cb->error)
    record_cuda (cb, cudaMemcpyAsync (host, dev, total,
            cudaMemcpyDeviceToHost, cb->stream), "frame output copy");
  if (!cb->error)
    record_cuda (cb, cudaStreamSynchronize (cb->stream), "frame output");
  /* the frame is written only from a complete result */
  if (!cb->error)
    frame_copy (d, frame->data, frame->stride, hp, hs);
}

/* ---- GEMMs ----
 *
 * Column-major C[m×n] = α·op(A)·op(B) + β·C in the backend's storage type
 * with fp32 accumulation (cublasGemmEx): FP32 compute for fp32 (the handle's
 * default math mode keeps it free of TF32), FAST_TF32 for tf32, and fp16 /
 * bf16 operands on tensor cores for those.  ctype: C's type (the CAM Gram
 * matrices are fp32 whatever the storage). */
static void
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
static void
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
static void
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

static void
cuda_layernorm (EhatBackend *be, const EhatNormW *nw, const float *x,
    gsize rows, int c, float *y)
{
  EhatCudaBackend *cb = CB (be);

  if (enter (cb, "layernorm"))
    record_cuda (cb, ehat_cuda_layernorm (cb->stream, cb->dt, x, rows, c,
            nw->w, nw->b, y), "layernorm");
}

static void
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

/* ---- attention ---- */

/* Whether index[i·nk + j] = (qoff[i] + koff[j]) mod len for all i, j with
 * both offsets in [0, len), and the offsets that make it so (koff the
 * first row, qoff the first column less index[0]); *rows: the largest
 * entry + 1, the table rows it reads.  HAT's window and OCAB indices are
 * (EHAT-SPEC.md §4: a difference of coordinates, OCAB's wrapped modulo the
 * table length); this checks the index it is given instead of assuming. */
static gboolean
rel_separable (const gint32 *index, int nq, int nk, int len, gint32 *qoff,
    gint32 *koff, int *rows)
{
  int top = 0;

  for (int j = 0; j < nk; j++)
    koff[j] = index[j];
  for (int i = 0; i < nq; i++)
    qoff[i] = ((index[(gsize) i * nk] - index[0]) % len + len) % len;
  for (int i = 0; i < nq; i++)
    for (int j = 0; j < nk; j++) {
      gint32 v = index[(gsize) i * nk + j], k = qoff[i] + koff[j];
      if (v < 0 || v >= len || (k >= len ? k - len : k) != v)
        return FALSE;
      top = MAX (top, v);
    }
  *rows = top + 1;
  return TRUE;
}

/* The separable form of index for nq×nk attention over a table of len
 * rows (per head) in *rel, its offsets uploaded at the first call (the
 * eager run before a graph is recorded); FALSE where the dense expansion
 * must be used: an index not separable or not from upload_index, or
 * EHAT_CUDA_ATTENTION=dense (read at each call; the A/B switch). */
static gboolean
rel_bias (EhatCudaBackend *cb, const float *table, const gint32 *index,
    int nq, int nk, int len, EhatCudaRelBias *rel)
{
  EhatRelIndex *ri = g_hash_table_lookup (cb->rel, index);
  cudaError_t e;

  if (!ri)
    return FALSE;
  if (ri->host) {
    ri->nq = nq;
    ri->nk = nk;
    ri->len = len;
    ri->host_off = g_new (gint32, (gsize) nq + nk);
    if (ri->n == (gsize) nq * nk && len > 0
        && rel_separable (ri->host, nq, nk, len, ri->host_off,
            ri->host_off + nq, &ri->rows)) {
      e = dev_malloc (cb, (void **) &ri->off, ((gsize) nq + nk)
          * sizeof (gint32));
      if (e == cudaSuccess)
        e = cudaMemcpyAsync (ri->off, ri->host_off, ((gsize) nq + nk)
            * sizeof (gint32), cudaMemcpyHostToDevice, cb->stream);
      if (e != cudaSuccess) {       /* the next call tries again */
        record_cuda (cb, e, "relative-position offsets");
        dev_free (cb, ri->off);
        ri->off = NULL;
        g_clear_pointer (&ri->host_off, g_free);
        return FALSE;
      }
    }
    if (!ri->off)
      g_clear_pointer (&ri->host_off, g_free);
    g_clear_pointer (&ri->host, g_free);
  }
  if (!ri->off || ri->nq != nq || ri->nk != nk || ri->len != len
      || g_strcmp0 (g_getenv ("EHAT_CUDA_ATTENTION"), "dense") == 0)
    return FALSE;
  *rel = (EhatCudaRelBias) { table, ri->off, ri->off + nq, len, ri->rows };
  return TRUE;
}

/* HAB's window attention (param: shift) or OCAB's (param: wse): on tensor
 * cores with the separable bias when both apply, else with the dense
 * bias expanded into scratch (tensor cores, or the SIMT kernel). */
static void
attention (EhatCudaBackend *cb, const float *qkv, int n, int h, int w,
    int c, int heads, int ws, int param, gboolean overlap,
    const float *table, const gint32 *index, float *out)
{
  const char *what = overlap ? "overlap attention" : "window attention";
  int nq = ws * ws, nk = overlap ? param * param : nq;
  int side = overlap ? ws + param - 1 : 2 * ws - 1;
  EhatCudaRelBias rel;
  cudaError_t e;
  float *bias;

  if (!enter (cb, what))
    return;
  if (cb->dt != EHAT_CUDA_F32
      && rel_bias (cb, table, index, nq, nk, side * side, &rel)) {
    e = ehat_cuda_attention_mma (cb->stream, cb->dt, qkv, n, h, w, c, heads,
        ws, param, overlap, NULL, &rel, out);
    if (e != cudaErrorNotSupported) {
      record_cuda (cb, e, what);
      return;
    }
  }
  if (cb->error || !(bias = scratch (cb, SCR_BIAS, (gsize) heads * nq * nk
              * sizeof (float))))
    return;
  record_cuda (cb, ehat_cuda_expand_bias (cb->stream, table, index, heads,
          nq, nk, bias), "attention bias");
  if (!cb->error)
    record_cuda (cb, overlap ? ehat_cuda_overlap_attention (cb->stream,
            cb->dt, qkv, n, h, w, c, heads, ws, param, bias, out)
        : ehat_cuda_window_attention (cb->stream, cb->dt, qkv, n, h, w, c,
            heads, ws, param, bias, out), what);
}

static void
cuda_window_attention (EhatBackend *be, const float *qkv, int n, int h,
    int w, int c, int heads, int ws, int shift, const float *table,
    const gint32 *index, float *out)
{
  attention (CB (be), qkv, n, h, w, c, heads, ws, shift, FALSE, table,
      index, out);
}

static void
cuda_overlap_attention (EhatBackend *be, const float *qkv, int n, int h,
    int w, int c, int heads, int ws, int wse, const float *table,
    const gint32 *index, float *out)
{
  attention (CB (be), qkv, n, h, w, c, heads, ws, wse, TRUE, table, index,
      out);
}

/* The per-image channel scales of v: sigmoid(up(ReLU(down(mean)))) in
 * scratch; NULL after recording a failure. */
static const float *
channel_scales (EhatCudaBackend *cb, const EhatLinearW *down,
    const EhatLinearW *up, const float *v, int n, gsize hw, int c)
{
  double *sums;
  float *sc;

  if (!(sums = scratch (cb, SCR_SUMS, (gsize) n * c
              * ehat_cuda_channel_sum_parts (hw) * sizeof (double)))
      || !(sc = scratch (cb, SCR_SCALE, (gsize) n * c * sizeof (float))))
    return NULL;
  record_cuda (cb, ehat_cuda_channel_sums (cb->stream, cb->dt, v, n, hw, c,
          sums),
      "channel attention (mean)");
  if (!cb->error)
    record_cuda (cb, ehat_cuda_channel_mlp (cb->stream, sums, n, hw, c,
            down->w, down->b, down->out, up->w, up->b, sc),
        "channel attention (MLP)");
  return cb->error ? NULL : sc;
}

static void
cuda_channel_attention (EhatBackend *be, const EhatLinearW *down,
    const EhatLinearW *up, float *v, int n, gsize hw, int c)
{
  EhatCudaBackend *cb = CB (be);
  const float *sc;

  if (enter (cb, "channel attention")
      && (sc = channel_scales (cb, down, up, v, n, hw, c)))
    record_cuda (cb, ehat_cuda_channel_scale (cb->stream, cb->dt, v, n, hw,
            c, sc),
        "channel attention (scale)");
}

/* CAB's channel attention with EHAT's w0·x0 and the residual sum folded
 * into the scaling pass: one pass over the maps instead of three (the
 * in-place scaling and two axpbys), and one rounding in fp16/bf16. */
static void
cuda_channel_attention_add (EhatBackend *be, const EhatLinearW *down,
    const EhatLinearW *up, const float *v, int n, gsize hw, int c, float w0,
    const float *x0, float alpha, float w1, float *t)
{
  EhatCudaBackend *cb = CB (be);
  const float *sc;

  if (enter (cb, "channel attention")
      && (sc = channel_scales (cb, down, up, v, n, hw, c)))
    record_cuda (cb, ehat_cuda_channel_scale_add (cb->stream, cb->dt, v, n,
            hw, c, sc, w0, x0, alpha, w1, t),
        "channel attention (scale, sums)");
}

static void
cuda_position_attention (EhatBackend *be, const float *q, const float *k,
    const float *v, int n, gsize hw, int dq, int c, float gamma, float *out)
{
  EhatCudaBackend *cb = CB (be);
  float *stats;

  if (!enter (cb, "position attention") || !(stats = scratch (cb, SCR_STATS, (gsize) n * hw * 2
              * sizeof (float))))
    return;
  record_cuda (cb, ehat_cuda_pam_stats (cb->stream, cb->dt, q, k, n, hw, dq,
          stats),
      "position attention (stats)");
  if (!cb->error)
    record_cuda (cb, ehat_cuda_pam_apply (cb->stream, cb->dt, q, k, v, n, hw,
            dq, c, gamma, stats, out), "position attention");
}

/* E = FᵀF per image (column-major: F is c×hw with ld c, E = F·Fᵀ), the row
 * softmax with γ folded in, then outᵀ += A·fᵀ (A row-major = Aᵀ
 * column-major, hence op T). */
static void
cuda_channel_gram_attention (EhatBackend *be, const float *f, int n,
    gsize hw, int c, float gamma, float *out)
{
  EhatCudaBackend *cb = CB (be);
  long long sf = (long long) hw * c, se = (long long) c * c;
  float *e;
  void *a;

  if (!enter (cb, "channel gram attention"))
    return;
  if (hw > INT_MAX) {
    record_msg (cb, EHAT_ERROR_INVALID_ARGUMENT,
        "channel attention: map too large");
    return;
  }
  if (!(e = scratch (cb, SCR_GRAM, (gsize) n * c * c * sizeof (float))))
    return;
  a = e;
  if (cb->dt != EHAT_CUDA_F32 && !(a = scratch (cb, SCR_GRAM_T, (gsize) n * c
              * c * cb->parent.act_bytes)))
    return;
  /* the Gram matrices in fp32 whatever the storage (sums over hw tokens) */
  gemm (cb, CUBLAS_OP_N, CUBLAS_OP_T, c, c, (int) hw, f, c, f, c, 0.0f, e,
      CUDA_R_32F, c, sf, sf, se, n, "channel attention Gram GEMM");
  if (!cb->error)
    record_cuda (cb, ehat_cuda_gram_softmax (cb->stream, cb->dt, e, n, c,
            gamma, a), "channel attention softmax");
  gemm (cb, CUBLAS_OP_T, CUBLAS_OP_N, c, (int) hw, c, a, c, f, c, 1.0f, out,
      cb->ct, c, se, sf, sf, n, "channel attention GEMM");
}

/* ---- CUDA graphs of the forward pass's body ----
 *
 * A HAT pass is hundreds of small launches (per block: norms, GEMMs and
 * their epilogues, attention, channel attention); replayed as one graph
 * they cost one launch, and the host no longer walks the network.  The
 * first pass of a shape runs eagerly (it makes every lazy allocation and
 * weight conversion), the second is recorded and launched, later ones
 * replay.  A recording is only good while every buffer it names lives:
 * any device free (a scratch buffer grown for a larger shape, a new
 * arena) makes all older recordings stale, and they are recorded again.
 * Recording fails safe: anything that may not happen while capturing
 * (an allocation, a synchronisation) fails the capture, the body runs
 * eagerly and that shape is never recorded again.  EHAT_CUDA_GRAPHS=0
 * turns graphs off; EHAT_CUDA_PROFILE does too (it times each op). */

static EhatGraphMode
cuda_graph_begin (EhatBackend *be, int n, int h, int w, const void *arena)
{
  EhatCudaBackend *cb = CB (be);
  EhatCudaGraph *g = NULL, *lru = &cb->graphs[0];
  cudaError_t e;

  if (!cb->graphs_on || cb->error || cb->recording >= 0)
    return EHAT_GRAPH_RUN;
  for (int i = 0; i < MAX_GRAPHS && !g; i++) {
    EhatCudaGraph *c = &cb->graphs[i];
    if (c->state != GRAPH_FREE && c->n == n && c->h == h && c->w == w
        && c->arena == arena)
      g = c;
    else if (c->state == GRAPH_FREE || (lru->state != GRAPH_FREE
            && c->last_use < lru->last_use))
      lru = c;
  }
  if (!g) {                     /* a new shape: this pass is the warm-up */
    graph_drop (lru);
    *lru = (EhatCudaGraph) { GRAPH_WARM, n, h, w, arena, cb->gen,
      ++cb->clock, NULL };
    return EHAT_GRAPH_RUN;
  }
  g->last_use = ++cb->clock;
  if (g->state == GRAPH_FAILED)
    return EHAT_GRAPH_RUN;
  if (g->state == GRAPH_READY && g->gen == cb->gen) {
    cudaSetDevice (cb->device);
    record_cuda (cb, cudaGraphLaunch (g->exec, cb->stream), "graph launch");
    cb->n_replayed++;
    return EHAT_GRAPH_REPLAYED;
  }
  if (g->exec) {                /* stale: record it again */
    cudaGraphExecDestroy (g->exec);
    g->exec = NULL;
  }
  cudaSetDevice (cb->device);
  e = cudaStreamBeginCapture (cb->stream, cudaStreamCaptureModeThreadLocal);
  if (e != cudaSuccess) {
    (void) cudaGetLastError ();
    g->state = GRAPH_FAILED;
    cb->n_failed++;
    return EHAT_GRAPH_RUN;
  }
  cb->recording = (int) (g - cb->graphs);
  return EHAT_GRAPH_RECORD;
}

static gboolean
cuda_graph_end (EhatBackend *be)
{
  EhatCudaBackend *cb = CB (be);
  EhatCudaGraph *g = &cb->graphs[cb->recording];
  cudaGraph_t graph = NULL;
  cudaError_t e;

  g_return_val_if_fail (cb->recording >= 0, FALSE);
  cb->recording = -1;
  e = cudaStreamEndCapture (cb->stream, &graph);
  if (e == cudaSuccess && !cb->error)
    e = cudaGraphInstantiate (&g->exec, graph, 0);
  if (graph)
    cudaGraphDestroy (graph);
  if (e != cudaSuccess || cb->error) {
    /* nothing of the body ran: the caller enqueues it again, eagerly (an
     * error that is not the capture's own comes back there) */
    g_debug ("CUDA graph of %d×%dx%d not recorded: %s", g->n, g->w, g->h,
        cb->error ? cb->error->message : cudaGetErrorString (e));
    (void) cudaGetLastError ();
    g_clear_error (&cb->error);
    if (g->exec)
      cudaGraphExecDestroy (g->exec);
    g->exec = NULL;
    g->state = GRAPH_FAILED;
    cb->n_failed++;
    return FALSE;
  }
  g->state = GRAPH_READY;
  g->gen = cb->gen;
  cb->n_recorded++;
  record_cuda (cb, cudaGraphLaunch (g->exec, cb->stream), "graph launch");
  return TRUE;
}

static gboolean
cuda_sync (EhatBackend *be, GError **error)
{
  EhatCudaBackend *cb = CB (be);

  prof_close (cb);
  cudaSetDevice (cb->device);
  record_cuda (cb, cudaStreamSynchronize (cb->stream), "stream");
  if (cb->error) {
    g_propagate_error (error, g_steal_pointer (&cb->error));
    return FALSE;
  }
  return TRUE;
}

static gboolean
cuda_memory_info (EhatBackend *be, gsize *free_bytes, gsize *total_bytes)
{
  EhatCudaBackend *cb = CB (be);
  size_t fr = 0, total = 0;

  if (cudaSetDevice (cb->device) != cudaSuccess
      || cudaMemGetInfo (&fr, &total) != cudaSuccess) {
    (void) cudaGetLastError ();
    return FALSE;
  }
  *free_bytes = fr;
  *total_bytes = total;
  return TRUE;
}

static const EhatBackendOps cuda_ops = {
  .destroy = cuda_destroy,
  .describe = cuda_describe,
  .alloc = cuda_alloc,
  .free = cuda_free,
  .device_memory = cuda_device_memory,
  .memory_info = cuda_memory_info,
  .upload = cuda_upload,
  .borrow = cuda_borrow,
  .unborrow = cuda_unborrow,
  .upload_index = cuda_upload_index,
  .upload_conv = cuda_upload_conv,
  .prepare_linear = cuda_prepare_linear,
  .release_linear = cuda_release_linear,
  .input = cuda_input,
  .output = cuda_output,
  .frame_input = cuda_frame_input,
  .frame_output = cuda_frame_output,
  .conv = cuda_conv,
  .linear = cuda_linear,
  .layernorm = cuda_layernorm,
  .axpby = cuda_axpby,
  .window_attention = cuda_window_attention,
  .overlap_attention = cuda_overlap_attention,
  .channel_attention = cuda_channel_attention,
  .channel_attention_add = cuda_channel_attention_add,
  .position_attention = cuda_position_attention,
  .channel_gram_attention = cuda_channel_gram_attention,
  .sync = cuda_sync,
  .graph_begin = cuda_graph_begin,
  .graph_end = cuda_graph_end,
};

/* The backend's constructor, reached through the module entry below. */
static EhatBackend *
cuda_backend_new (int device_id, EhatPrecision precision, GError **error)
{
  EhatCudaBackend *cb;
  struct cudaDeviceProp prop;
  int count = 0, major = 0, minor = 0;
  const char *gemm_mode;
  cudaError_t e;
  cublasStatus_t st;

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

  /* auto: fp16, the tensor cores' fastest type with a 10-bit mantissa
   * (bf16 has 7); fp32 stays the reference, asked for by name */
  if (precision == EHAT_PRECISION_AUTO)
    precision = EHAT_PRECISION_FP16;
  if (precision == EHAT_PRECISION_BF16 && major < 8) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_UNSUPPORTED,
        "bf16 needs compute capability 8.0 or newer; CUDA device %d (%s) "
        "has %d.%d (use fp16)", device_id, prop.name, major, minor);
    return NULL;
  }

  cb = g_new0 (EhatCudaBackend, 1);
  cb->parent.ops = &cuda_ops;
  cb->parent.kind = EHAT_BACKEND_CUDA;
  cb->device = device_id;
  cb->precision = precision;
  cb->parent.precision = precision;
  cb->dt = precision == EHAT_PRECISION_FP16 ? EHAT_CUDA_F16
      : precision == EHAT_PRECISION_BF16 ? EHAT_CUDA_BF16 : EHAT_CUDA_F32;
  cb->ct = cb->dt == EHAT_CUDA_F16 ? CUDA_R_16F
      : cb->dt == EHAT_CUDA_BF16 ? CUDA_R_16BF : CUDA_R_32F;
  cb->compute = precision == EHAT_PRECISION_TF32
      ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  cb->parent.act_bytes = cb->dt == EHAT_CUDA_F32 ? 4 : 2;
  cb->pad = cb->dt != EHAT_CUDA_F32
      && g_strcmp0 (g_getenv ("EHAT_CUDA_GEMM_PAD"), "0") != 0;
  gemm_mode = g_getenv ("EHAT_CUDA_GEMM");
  if (gemm_mode && g_strcmp0 (gemm_mode, "fused") != 0
      && g_strcmp0 (gemm_mode, "conv") != 0
      && g_strcmp0 (gemm_mode, "cublas") != 0)
    g_warning ("EHAT_CUDA_GEMM=%s is none of cublas, conv, fused; using "
        "cublas", gemm_mode);
  cb->fused_conv = cb->pad && major >= 8
      && (g_strcmp0 (gemm_mode, "fused") == 0
      || g_strcmp0 (gemm_mode, "conv") == 0);
  cb->fused_linear = cb->fused_conv && g_strcmp0 (gemm_mode, "fused") == 0;
  cb->weights = g_hash_table_new (NULL, NULL);
  if (g_getenv ("EHAT_CUDA_PROFILE"))
    cb->prof = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, g_free);
  cb->narrow = g_hash_table_new (NULL, NULL);
  cb->rel = g_hash_table_new_full (NULL, NULL, NULL, g_free);
  cb->sizes = g_hash_table_new (NULL, NULL);
  cb->recording = -1;
  cb->graphs_on = !cb->prof
      && g_strcmp0 (g_getenv ("EHAT_CUDA_GRAPHS"), "0") != 0;

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
  /* a workspace of our own (after SetStream, which resets it): cuBLAS
   * then allocates nothing while a graph is being recorded (its guide's
   * advice; 32 MiB covers Hopper's largest kernels) */
  if (st == CUBLAS_STATUS_SUCCESS) {
    gsize ws = major >= 9 ? (32u << 20) : (4u << 20);
    e = dev_malloc (cb, &cb->blas_ws, ws);
    if (e == cudaSuccess)
      st = cublasSetWorkspace (cb->blas, cb->blas_ws, ws);
    else
      st = CUBLAS_STATUS_ALLOC_FAILED;
  }
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
  /* the GEMM path too, so that an A/B run's log says which it timed */
  cb->description = g_strdup_printf ("cuda (device %d: %s, %s%s)", device_id,
      prop.name, precision == EHAT_PRECISION_TF32 ? "tf32"
      : precision == EHAT_PRECISION_FP16 ? "fp16, fp32 accumulation"
      : precision == EHAT_PRECISION_BF16 ? "bf16, fp32 accumulation"
      : "fp32", cb->fused_linear ? ", fused GEMMs"
      : cb->fused_conv ? ", fused convolutions" : "");
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
