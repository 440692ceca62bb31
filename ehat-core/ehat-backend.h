/* The backend-operations interface (internal).
 *
 * The network (ehat-network.c) is written once against these operations;
 * each backend (CPU, CUDA) implements them.  Every `float *` handed to an
 * operation is backend memory (host memory for the CPU, device memory for
 * CUDA) obtained from the backend's own alloc/upload functions.
 *
 * Activation buffers hold act_bytes-sized elements (fp32 unless the
 * backend stores activations narrower); sizes passed to alloc and the
 * operations count elements.
 *
 * Layout: feature maps are "tokens × channels" (NHWC): n images of h×w
 * positions, each a row of c floats.  That keeps the linear layers, which
 * are most of the work, as single large GEMMs, and lets the 3×3 convolutions
 * run as GEMMs over im2col bands.
 *
 * Operations return nothing: a backend that runs asynchronously records its
 * first failure and reports it from sync(), like CUDA itself does. */
#ifndef EHAT_BACKEND_H
#define EHAT_BACKEND_H

#include "ehat.h"
#include "ehat-frame.h"
#include "ehat-frame-desc.h"

G_BEGIN_DECLS

typedef enum
{
  EHAT_ACT_NONE,
  EHAT_ACT_GELU,                /* exact, erf form */
  EHAT_ACT_RELU,
  EHAT_ACT_LRELU,               /* negative slope 0.01 */
} EhatAct;

/* What the caller of graph_begin does with a forward pass's body. */
typedef enum
{
  EHAT_GRAPH_RUN,               /* enqueue it */
  EHAT_GRAPH_RECORD,            /* enqueue it, then call graph_end */
  EHAT_GRAPH_REPLAYED,          /* nothing: its recording was enqueued */
} EhatGraphMode;

/* A convolution, weights packed by the backend (zero padding k/2). */
typedef struct
{
  float *w;
  float *b;
  int cin, cout, k;
} EhatConvW;

/* y = x·Wᵀ + b, W row-major [out, in] as in PyTorch. */
typedef struct
{
  float *w;
  float *b;
  int in, out;
  /* W in the backend's own layout, made once at load by prepare_linear
   * (the CPU backend's packed GEMM panels); NULL: linear() reads w. */
  gpointer prepared;
} EhatLinearW;

typedef struct
{
  float *w;
  float *b;
} EhatNormW;

typedef struct _EhatBackend EhatBackend;
typedef struct _EhatBackendOps EhatBackendOps;

struct _EhatBackend
{
  const EhatBackendOps *ops;
  EhatBackendKind kind;
  /* Bytes of one activation element in this backend's buffers: 4 (fp32),
   * or 2 where activations are stored in fp16/bf16 (the CUDA backend's
   * reduced precisions).  The network sizes the arena and offsets into
   * activation buffers by it (ehat_act_at); weights stay fp32 floats. */
  int act_bytes;
  /* What it computes in (never AUTO). */
  EhatPrecision precision;
};

/* p advanced by n activation elements of be. */
static inline float *
ehat_act_at (const EhatBackend *be, float *p, gsize n)
{
  return (float *) ((char *) p + n * (gsize) be->act_bytes);
}

struct _EhatBackendOps
{
  void (*destroy) (EhatBackend *be);
  const char *(*describe) (EhatBackend *be);

  /* Memory.  alloc'd buffers are uninitialised. */
  float *(*alloc) (EhatBackend *be, gsize n_floats, GError **error);
  void (*free) (EhatBackend *be, void *ptr);
  float *(*upload) (EhatBackend *be, const float *host, gsize n_floats,
      GError **error);
  /* Weights used as they are: the CPU backend reads the model's own copy
   * (the network keeps the model alive), others upload.  Undo with
   * unborrow(). */
  float *(*borrow) (EhatBackend *be, const float *host, gsize n_floats,
      GError **error);
  void (*unborrow) (EhatBackend *be, float *ptr);
  gint32 *(*upload_index) (EhatBackend *be, const gint32 *host, gsize n,
      GError **error);
  /* Uploads a PyTorch conv weight [cout, cin, k, k] in the backend's layout. */
  float *(*upload_conv) (EhatBackend *be, const float *w, int cout, int cin,
      int k, GError **error);
  /* Optional (NULL: linear() reads lw->w as it is).  Sets lw->prepared
   * to W in the layout the backend's GEMM wants, so that no weight is
   * repacked per call; release_linear (optional too: NULL when the
   * backend frees the copy with lw->w) frees it.  Called only for layers
   * of the GEMM operations (linear, norm_linear, mlp), which may then
   * read lw->prepared alone: a backend that needs nothing else may give
   * lw->w back (as unborrow() would) and set it to NULL, so that a
   * weight is not held twice (the CUDA backend's fp16/bf16 copies). */
  gboolean (*prepare_linear) (EhatBackend *be, EhatLinearW *lw,
      GError **error);
  void (*release_linear) (EhatBackend *be, EhatLinearW *lw);

  /* Host planar RGB n×3×h×w → backend NHWC n×H×W×3: reflect-padded
   * bottom/right to H×W, then (x − mean)·range. */
  void (*input) (EhatBackend *be, const float *host, int n, int w, int h,
      int W, int H, const float mean[3], float range, float *x);
  /* Backend NHWC n×H×W×3 → host planar n×3×h×w (crop): x/range + mean. */
  void (*output) (EhatBackend *be, const float *x, int n, int W, int H,
      int w, int h, const float mean[3], float range, float *host);

  /* Optional (NULL: frames are converted on the host by ehat-frame.c and
   * go through input/output as float planes).  input() from the pixels of
   * one video frame and output() into those of another, fused with the
   * conversions of ehat_frame_read() and ehat_frame_write() and giving the
   * same codes (the maths of ehat-frame-desc.h), so that a frame's bytes
   * cross to the device instead of float planes (4 bytes a sample) and no
   * host time goes into colour conversion.  d: the frame's description
   * (ehat_frame_describe()).  One image, of d->width × d->height, padded
   * to W×H or cropped from it.  Alpha: with alpha_from (the description
   * of the frame given to frame_input in this pass), frame_output resizes
   * that frame's alpha to its own as ehat_plane_resize_bilinear() does;
   * without, it writes alpha opaque, as ehat_frame_write() does without
   * an alpha plane. */
  void (*frame_input) (EhatBackend *be, const EhatFrame *frame,
      const EhatFrameDesc *d, int W, int H, const float mean[3], float range,
      float *x);
  void (*frame_output) (EhatBackend *be, const float *x, int W, int H,
      const float mean[3], float range, const EhatFrameDesc *d,
      EhatFrame *frame, const EhatFrameDesc *alpha_from);

  /* y = act(conv(x) + b) + res_alpha·res (res may be NULL, and may be y
   * when act is NONE and shuffle 1: an in-place residual update; x never
   * aliases y).  shuffle > 1 writes the
   * output pixel-shuffled: y is then n×(h·s)×(w·s)×(cout/s²). */
  void (*conv) (EhatBackend *be, const EhatConvW *cw, const float *x, int n,
      int h, int w, float *y, EhatAct act, const float *res, float res_alpha,
      int shuffle);
  /* y = act(x·Wᵀ + b) + beta·y over rows; beta ≠ 0 only with act NONE. */
  void (*linear) (EhatBackend *be, const EhatLinearW *lw, const float *x,
      gsize rows, float *y, EhatAct act, float beta);
  /* Optional (NULL: the network calls layernorm, then linear, through a
   * buffer of its own).  y = act(LN(x)·Wᵀ + b), LN over the lw->in
   * channels of each row as layernorm() computes it, applied while the
   * GEMM reads x: the normalised map never goes through memory (HAT's
   * norm2 → fc1, and OCAB's norm1 → qkv, have no other reader). */
  void (*norm_linear) (EhatBackend *be, const EhatNormW *nw,
      const EhatLinearW *lw, const float *x, gsize rows, float *y,
      EhatAct act);
  /* Optional (NULL: norm_linear, then linear, through a buffer of the
   * network's, then axpby): a transformer block's MLP with its residual,
   * y = beta·y + fc2(GELU(fc1(LN(x)))) over rows of fc1->in; y may be x
   * (HAT: t = w1·t + MLP(LN(t))); then acc += acc_w·y when acc is set
   * (EHAT's sum of the blocks' outputs).  Run block of rows by block, the
   * hidden activations (fc1->out wide: the widest map of the network, 2–4×
   * the embedding) stay in cache instead of going through memory twice. */
  void (*mlp) (EhatBackend *be, const EhatNormW *nw, const EhatLinearW *fc1,
      const EhatLinearW *fc2, const float *x, gsize rows, float *y,
      float beta, float *acc, float acc_w);
  /* Per row over c channels, eps 1e-5, biased variance; y may be x. */
  void (*layernorm) (EhatBackend *be, const EhatNormW *nw, const float *x,
      gsize rows, int c, float *y);
  /* y = a·x + b·y */
  void (*axpby) (EhatBackend *be, float *y, float a, const float *x, float b,
      gsize n);

  /* Window self-attention of HAB on qkv (rows of 3c: q | k | v) of n maps
   * h×w (multiples of ws); cyclic shift by `shift` (0 = none) with the
   * −100 region mask.  The relative-position bias of query i and key j for
   * head hd is table[index[i·ws² + j]·heads + hd].  out: rows of c (heads
   * concatenated, before proj), at the unshifted positions. */
  void (*window_attention) (EhatBackend *be, const float *qkv, int n, int h,
      int w, int c, int heads, int ws, int shift, const float *table,
      const gint32 *index, float *out);
  /* OCAB: ws×ws query windows against wse×wse key/value squares centred on
   * them (zero vectors outside the map); bias as above with index
   * [ws²·wse²]. */
  void (*overlap_attention) (EhatBackend *be, const float *qkv, int n, int h,
      int w, int c, int heads, int ws, int wse, const float *table,
      const gint32 *index, float *out);
  /* v ·= sigmoid(up(ReLU(down(mean over each image's hw rows of v)))) */
  void (*channel_attention) (EhatBackend *be, const EhatLinearW *down,
      const EhatLinearW *up, float *v, int n, gsize hw, int c);
  /* Optional (NULL: channel_attention, then axpby): CAB's channel
   * attention with the sums around it folded into its scaling pass,
   * t = w1·t + alpha·(v·σ(…) + w0·x0), σ(…) as above per image, x0 read
   * only when not NULL (EHAT's branch weight w0 on the block's LN output;
   * HAT: NULL), t not read when w1 = 0; v is not written. */
  void (*channel_attention_add) (EhatBackend *be, const EhatLinearW *down,
      const EhatLinearW *up, const float *v, int n, gsize hw, int c,
      float w0, const float *x0, float alpha, float w1, float *t);

  /* DANet (EHAT-SPEC.md §6), per image of hw tokens:
   * out += gamma · softmax_j(q_i·k_j)·v_j over all positions j (q, k rows
   * of dq, v rows of c); streamed, never materialising the hw×hw scores. */
  void (*position_attention) (EhatBackend *be, const float *q, const float *k,
      const float *v, int n, gsize hw, int dq, int c, float gamma,
      float *out);
  /* out += gamma · CAM(f): E = FᵀF (c×c over the hw tokens),
   * A = softmax_row(max_row(E) − E), out_token = A·f_token. */
  void (*channel_gram_attention) (EhatBackend *be, const float *f, int n,
      gsize hw, int c, float gamma, float *out);

  /* Waits for queued work; reports the first failure since the last sync. */
  gboolean (*sync) (EhatBackend *be, GError **error);

  /* Optional (NULL: host memory only).  Bytes of device memory the backend
   * holds now and at most since its creation: weights, activations,
   * scratch; not the driver's context nor the libraries' own workspaces. */
  void (*device_memory) (EhatBackend *be, gsize *now, gsize *peak);
  /* Optional (NULL: host memory only).  The device's free and total
   * bytes now, as its driver reports them; FALSE when it cannot say. */
  gboolean (*memory_info) (EhatBackend *be, gsize *free_bytes,
      gsize *total_bytes);

  /* Optional (NULL: every pass enqueues every operation).  Replay of a
   * forward pass's body — everything between input and output — as one
   * recorded unit (the CUDA backend: a CUDA graph per shape, so that a
   * pass costs one launch instead of hundreds).  graph_begin says what
   * the caller does for this pass of n images of h×w (padded) whose
   * activations live at `arena`: RUN, enqueue the body; RECORD, enqueue
   * it, then call graph_end; REPLAYED, nothing (the recording was
   * enqueued).  graph_end returns FALSE when the recording failed and the
   * body was not enqueued: the caller enqueues it again, and the backend
   * does not try to record that shape again. */
  EhatGraphMode (*graph_begin) (EhatBackend *be, int n, int h, int w,
      const void *arena);
  gboolean (*graph_end) (EhatBackend *be);
};

EhatBackend *ehat_backend_cpu_new (int n_threads, GError **error);

/* ---- backend modules (ehat-backend-module.c) ----
 *
 * The CUDA backend is a separate shared module, libehat-cuda.so, opened on
 * first use with GModule, so that libehat and the processes using it link
 * no CUDA library (cuBLAS and cudart cost ≈ 195 MiB of RSS).  Its
 * one exported symbol, EHAT_BACKEND_MODULE_ENTRY, returns an
 * EhatBackendModule; libehat refuses a module whose abi_version or
 * ops_size differ from its own.
 *
 * Bump EHAT_BACKEND_ABI_VERSION whenever anything a module relies on
 * changes: this header (EhatBackend, EhatBackendOps and what its
 * comments promise, the weight structs, EhatBackendModule), the enums of
 * ehat.h that cross it (EhatPrecision, EhatBackendKind, EhatError), or the
 * libehat functions modules call. */
#define EHAT_BACKEND_ABI_VERSION 7
#define EHAT_BACKEND_MODULE_ENTRY "ehat_backend_module_entry"

/* The first two fields stay where they are in every ABI version. */
typedef struct
{
  guint32 abi_version;          /* EHAT_BACKEND_ABI_VERSION of its build */
  guint32 ops_size;             /* sizeof (EhatBackendOps) of its build */
  const char *name;             /* "cuda" for libehat-cuda.so */
  EhatBackend *(*create) (int device_id, EhatPrecision precision,
      GError **error);
} EhatBackendModule;

typedef const EhatBackendModule *(*EhatBackendModuleEntry) (void);

/* Finds libehat-<name>.so in the directories of EHAT_BACKEND_PATH (a
 * G_SEARCHPATH_SEPARATOR list; when set, it replaces the default) or else
 * EHAT_BACKEND_DIR ($libdir/ehat-1), opens the first one found and checks
 * it.  Not cached: every call opens again (GModule counts references; the
 * module stays resident).  EHAT_ERROR_UNSUPPORTED when no file is found,
 * EHAT_ERROR_BACKEND when one is found but cannot be used. */
const EhatBackendModule *ehat_backend_module_load (const char *name,
    GError **error);
/* The same in the directories of search_path (tests), ignoring
 * EHAT_BACKEND_PATH and EHAT_BACKEND_DIR. */
const EhatBackendModule *ehat_backend_module_load_from (const char *name,
    const char *search_path, GError **error);

/* The CUDA backend through its module, loaded once per process (the
 * outcome, failure included, is kept).  With probe (backend=auto) the CUDA
 * driver (libcuda.so.1, cuInit, a device count) is checked first, without
 * the module: a machine without a driver or device never maps cuBLAS. */
EhatBackend *ehat_backend_cuda_new (int device_id, EhatPrecision precision,
    gboolean probe, GError **error);
/* The driver check above alone (cached likewise). */
gboolean ehat_cuda_driver_probe (GError **error);

G_END_DECLS

#endif /* EHAT_BACKEND_H */
