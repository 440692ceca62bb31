/* The CUDA backend: every operation of EhatBackendOps (ehat-backend.h) on
 * one CUDA stream per backend instance, GEMMs through cuBLAS or the fused
 * kernel, the rest in the kernels of this directory (ehat-cuda.h).  Built
 * with them into the module libehat-cuda.so, which libehat opens on demand
 * (ehat-core/ehat-backend-module.c; the entry is at the end of this file).
 * This file holds its lifetime, memory, weights, errors and graphs; the
 * operations are in ehat-cuda-backend-{gemm,attention,frame}.c
 * (ehat-cuda-backend-private.h).
 *
 * Precisions: fp32 (the reference path, no TF32), tf32 (cuBLAS TF32
 * tensor ops for the GEMMs, fp32 storage), fp16 and bf16 (activations
 * stored in that type, act_bytes 2; GEMMs on tensor cores with fp32
 * accumulation; every other kernel computes in fp32).  The small weights
 * stay fp32 on the device (biases, norms, bias tables and the
 * channel-attention MLP use them so); GEMM weights are held in the
 * storage type alone: convolutions converted at upload_conv, linear
 * weights at prepare_linear, which gives their fp32 copy back.
 *
 * Errors: operations return nothing; the first failure (launch error,
 * cuBLAS status, scratch allocation) is recorded and reported by sync() as
 * a GError (EHAT_ERROR_OUT_OF_MEMORY for allocation failures, else
 * EHAT_ERROR_BACKEND).  After a failure the following operations are
 * skipped until sync() has reported it. */
#include "ehat-cuda-backend-private.h"

#include <gmodule.h>
#include <limits.h>
#include <string.h>

typedef struct
{
  gint64 us;
  guint calls;
} EhatProf;

/* ---- errors ---- */

void
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

void
record_blas (EhatCudaBackend *cb, cublasStatus_t st, const char *what)
{
  if (st == CUBLAS_STATUS_SUCCESS || cb->error)
    return;
  g_set_error (&cb->error, EHAT_ERROR, st == CUBLAS_STATUS_ALLOC_FAILED
      ? EHAT_ERROR_OUT_OF_MEMORY : EHAT_ERROR_BACKEND,
      "cuBLAS error in %s: %s", what, cublasGetStatusString (st));
}

void
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
gboolean
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
cudaError_t
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

cudaError_t
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
  /* rounded up, so that sizes a little apart share one buffer: to 64 KiB
   * while small (a 1 MiB step would be most of what the small slots
   * hold), then to 1 MiB */
  bytes = MAX (bytes, 1);
  if (bytes < ((gsize) 16 << 20))
    bytes = (bytes + 0xffff) & ~(gsize) 0xffff;
  else
    bytes = (bytes + 0xfffff) & ~(gsize) 0xfffff;
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
void *
scratch (EhatCudaBackend *cb, EhatScratch slot, gsize bytes)
{
  return grow (cb, &cb->scratch[slot], &cb->scratch_bytes[slot], bytes,
      FALSE);
}

/* A page-locked host buffer of at least `bytes`, grown on demand.  Only
 * frame_input and frame_output use them, and a forward pass ends by
 * draining the stream (output), so no copy from or to the old one is
 * pending when it is replaced or written. */
guint8 *
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
const void *
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
const void *
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

  cb->arena_bytes = GPOINTER_TO_SIZE (g_hash_table_lookup (cb->sizes,
          arena));
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
  cb->conv_direct = g_strcmp0 (g_getenv ("EHAT_CUDA_CONV_DIRECT"), "0") != 0;
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
