/* libehat — HAT / EHAT super-resolution: public C API.
 *
 * One model file (safetensors, see docs/model-format.md), one network
 * definition, several backends (CPU reference/fallback, CUDA fast path).
 * Every function that can fail on user input reports a GError in the
 * EHAT_ERROR domain; nothing here aborts on bad input.
 *
 * Images cross this API as planar float RGB: 3 planes of width×height
 * floats, nominally in [0, 1].  Batches are N such images back to back.
 */
#ifndef EHAT_H
#define EHAT_H

#include <glib.h>

G_BEGIN_DECLS

#define EHAT_ERROR (ehat_error_quark ())
GQuark ehat_error_quark (void);

typedef enum
{
  EHAT_ERROR_IO,              /* file cannot be opened / read */
  EHAT_ERROR_FORMAT,          /* not a valid safetensors file */
  EHAT_ERROR_CONFIG,          /* metadata missing or inconsistent */
  EHAT_ERROR_TENSOR,          /* tensor missing, wrong dtype or shape */
  EHAT_ERROR_UNSUPPORTED,     /* valid, but not supported by this build */
  EHAT_ERROR_INVALID_ARGUMENT,
  EHAT_ERROR_BACKEND,         /* backend failure (CUDA error, ...) */
  EHAT_ERROR_OUT_OF_MEMORY,   /* host or device allocation failed */
} EhatError;

typedef enum
{
  EHAT_ARCH_HAT,
  EHAT_ARCH_EHAT,
} EhatArch;

#define EHAT_MAX_GROUPS 32

/* The network configuration, from the model file's __metadata__. */
typedef struct
{
  EhatArch arch;
  int upscale;                  /* 2, 3 or 4 */
  int embed_dim;                /* C */
  int n_groups;                 /* residual groups (RHAG) */
  int depths[EHAT_MAX_GROUPS];  /* HAB blocks per group */
  int num_heads[EHAT_MAX_GROUPS];
  int window_size;
  int compress_ratio;
  int squeeze_factor;
  float conv_scale;
  float overlap_ratio;
  float mlp_ratio;
  float img_range;
  float rgb_mean[3];
  gboolean ape;                 /* absolute position embedding present */
  int ape_tokens;               /* its token count, ape_size² */
  gboolean danet;               /* optional dual-attention block */
  /* derived */
  int overlap_window;           /* wse = ws + int(ws * overlap_ratio) */
  int mlp_hidden;               /* int(C * mlp_ratio) */
  /* With an absolute position embedding, the side S of the S×S LR grid it
   * covers (HAT's img_size, a multiple of the window size), else 0.  It
   * fixes the size of every pass: a smaller input is reflect-padded to
   * S×S, a larger one must be tiled (ehat_upscale_tiled() uses S×S tiles
   * for such a model). */
  int ape_size;
} EhatConfig;

typedef struct _EhatModel EhatModel;

EhatModel *ehat_model_load (const char *path, GError **error);
/* Same, from bytes in memory (weights are copied: the bytes are not needed
 * after the call). */
EhatModel *ehat_model_load_from_bytes (GBytes *bytes, GError **error);
EhatModel *ehat_model_ref (EhatModel *model);
void ehat_model_unref (EhatModel *model);

const EhatConfig *ehat_model_get_config (const EhatModel *model);
/* A metadata string (name, licence, ...) or NULL. */
const char *ehat_model_get_metadata (const EhatModel *model, const char *key);
/* All metadata keys, sorted; free the array (not the strings) with g_free. */
const char **ehat_model_list_metadata (const EhatModel *model);
guint64 ehat_model_get_n_params (const EhatModel *model);
/* Multiply-adds per low-resolution pixel for an h×w input (attention and
 * padding make it depend weakly on the size). */
double ehat_model_get_macs_per_pixel (const EhatModel *model, int width,
    int height);

typedef enum
{
  EHAT_BACKEND_AUTO,            /* CUDA when a device exists, else CPU */
  EHAT_BACKEND_CPU,
  EHAT_BACKEND_CUDA,
} EhatBackendKind;

typedef enum
{
  EHAT_PRECISION_AUTO,
  EHAT_PRECISION_FP32,
  EHAT_PRECISION_TF32,
  EHAT_PRECISION_FP16,
  EHAT_PRECISION_BF16,
} EhatPrecision;

typedef struct
{
  EhatBackendKind backend;
  EhatPrecision precision;
  int device_id;
  int n_threads;                /* CPU threads, 0 = all cores */
} EhatEngineOptions;

#define EHAT_ENGINE_OPTIONS_INIT { EHAT_BACKEND_AUTO, EHAT_PRECISION_AUTO, 0, 0 }

typedef struct _EhatEngine EhatEngine;

/* Creates an engine (weights uploaded/packed once).  With backend AUTO and no
 * usable GPU this falls back to the CPU and says why in
 * ehat_engine_get_fallback_reason(). */
EhatEngine *ehat_engine_new (EhatModel *model, const EhatEngineOptions *opts,
    GError **error);
void ehat_engine_free (EhatEngine *engine);
EhatModel *ehat_engine_get_model (EhatEngine *engine);
EhatBackendKind ehat_engine_get_backend (EhatEngine *engine);
EhatPrecision ehat_engine_get_precision (EhatEngine *engine);
/* "auto", "fp32", "tf32", "fp16" or "bf16": the names of the element's
 * precision property and of the CLI's --precision. */
const char *ehat_precision_name (EhatPrecision precision);
/* e.g. "cpu (2 threads, OpenBLAS 0.3.21, fp32)" */
const char *ehat_engine_describe (EhatEngine *engine);
/* Why AUTO ended up on the CPU, or NULL. */
const char *ehat_engine_get_fallback_reason (EhatEngine *engine);
/* Peak bytes of activation memory used by the last forward passes. */
gsize ehat_engine_get_peak_workspace (EhatEngine *engine);
/* Device memory held by a GPU backend: once the weights were uploaded, now
 * and at most so far (weights, activations, scratch; the CUDA context and
 * the libraries' workspaces not counted).  FALSE, and zeros, on the CPU. */
gboolean ehat_engine_get_device_memory (EhatEngine *engine, gsize *weights,
    gsize *now, gsize *peak);

/* Bytes of activation workspace ehat_engine_process() will need for n
 * images of width×height (computed from the network's arena plan, nothing
 * is allocated; 0 on invalid sizes).  Backend scratch that does not grow
 * with the image (per-thread attention and im2col buffers) is not
 * included. */
gsize ehat_engine_estimate_bytes (EhatEngine *engine, int n, int width,
    int height);

/* The reference pipeline of the original code on a batch of n images of
 * width×height: reflect-pad bottom/right to a multiple of the window size,
 * (x − mean)·range, network, /range + mean, crop.  Raw output, no clamping.
 * in: n×3×height×width floats; out: n×3×(s·height)×(s·width) floats. */
gboolean ehat_engine_process (EhatEngine *engine, const float *in, int n,
    int width, int height, float *out, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (EhatModel, ehat_model_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EhatEngine, ehat_engine_free)

G_END_DECLS

#endif /* EHAT_H */
