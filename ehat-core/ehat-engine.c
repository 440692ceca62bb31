/* An engine = a model bound to a backend, with its weights uploaded once. */
#include "ehat.h"

#include "ehat-backend.h"
#include "ehat-cpu.h"
#include "ehat-engine-private.h"
#include "ehat-network.h"

struct _EhatEngine
{
  EhatModel *model;
  EhatBackend *be;
  EhatNetwork *net;
  EhatPrecision precision;
  char *fallback_reason;
  gsize peak_workspace;
  gsize device_weights;         /* device bytes held once the weights are in */
  /* the backend converts video frames (ehat_upscale_frame), unless
   * EHAT_FRAME_CONVERSION=host asks for the host's conversion (an A/B
   * switch for benchmarks: both give the same bytes) */
  gboolean frames_on_device;
  guint64 device_frames;        /* ehat_engine_process_frame() passes */
  gsize device_budget;          /* ehat_engine_get_device_budget() */
  gboolean budget_known;
  gsize plan_budget;            /* ehat_engine_get_plan_budget() */
  gboolean plan_known;
  gsize fits;                   /* ehat_engine_lower_budget(); 0 = none */
  float *host[4];               /* ehat_engine_host_scratch() */
  gsize host_n[4];
};

static EhatBackend *
create_backend (const EhatEngineOptions *o, char **fallback, GError **error)
{
  g_autoptr (GError) cuda_error = NULL;

  if (o->backend == EHAT_BACKEND_CUDA || o->backend == EHAT_BACKEND_AUTO) {
    /* the CUDA module, loaded on first use (ehat-backend-module.c); for
     * AUTO the driver and a device are checked first, without it */
    EhatBackend *be = ehat_backend_cuda_new (o->device_id, o->precision,
        o->backend == EHAT_BACKEND_AUTO, &cuda_error);
    if (be)
      return be;
    if (o->backend == EHAT_BACKEND_CUDA) {
      g_propagate_error (error, g_steal_pointer (&cuda_error));
      return NULL;
    }
    *fallback = g_strdup_printf ("CUDA unavailable (%s); using the CPU",
        cuda_error->message);
  }
  /* bf16 on the CPU: AVX512-BF16 GEMMs where the CPU has them (checked at
   * run time), else fp32 with the reason stated. */
  if (o->precision == EHAT_PRECISION_BF16 && !ehat_cpu_has_bf16 ()) {
    char *prev = *fallback;
    *fallback = g_strdup_printf ("%s%sbf16 needs a CPU with AVX512-BF16%s; "
        "running fp32", prev ? prev : "", prev ? "; " : "",
        g_getenv ("EHAT_CPU_NO_BF16") ? " (disabled by EHAT_CPU_NO_BF16)"
        : ", which this one lacks");
    g_free (prev);
  }
  return ehat_backend_cpu_new_full (o->n_threads,
      o->precision == EHAT_PRECISION_BF16, error);
}

EhatEngine *
ehat_engine_new (EhatModel *model, const EhatEngineOptions *opts,
    GError **error)
{
  EhatEngineOptions defaults = EHAT_ENGINE_OPTIONS_INIT;
  EhatEngine *e;

  g_return_val_if_fail (model != NULL, NULL);
  if (!opts)
    opts = &defaults;
  if (opts->n_threads < 0 || opts->device_id < 0) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "negative thread count or device id");
    return NULL;
  }

  e = g_new0 (EhatEngine, 1);
  e->model = ehat_model_ref (model);
  e->be = create_backend (opts, &e->fallback_reason, error);
  if (!e->be) {
    ehat_engine_free (e);
    return NULL;
  }
  if (e->be->kind == EHAT_BACKEND_CPU
      && (opts->precision == EHAT_PRECISION_TF32
          || opts->precision == EHAT_PRECISION_FP16)) {
    /* The CPU runs fp32 (the reference; also for AUTO) or, when asked for
     * and the CPU has AVX512-BF16, bf16 GEMMs (see create_backend).  tf32
     * and fp16 are GPU precisions: refused when the CPU was asked for,
     * fp32 with the reason when the GPU was wanted (auto) but is absent. */
    if (opts->backend == EHAT_BACKEND_CPU) {
      g_set_error (error, EHAT_ERROR, EHAT_ERROR_UNSUPPORTED,
          "the CPU backend runs in fp32 or bf16 only");
      ehat_engine_free (e);
      return NULL;
    } else {
      char *prev = e->fallback_reason;
      e->fallback_reason = g_strdup_printf ("%s%s%s is a GPU precision; "
          "running fp32", prev ? prev : "", prev ? "; " : "",
          ehat_precision_name (opts->precision));
      g_free (prev);
    }
  }
  e->precision = e->be->precision;
  e->frames_on_device = e->be->ops->frame_input && e->be->ops->frame_output
      && g_strcmp0 (g_getenv ("EHAT_FRAME_CONVERSION"), "host") != 0;
  e->net = ehat_network_new (model, e->be, error);
  if (!e->net) {
    ehat_engine_free (e);
    return NULL;
  }
  if (e->be->ops->device_memory) {
    gsize peak;
    e->be->ops->device_memory (e->be, &e->device_weights, &peak);
  }
  return e;
}

void
ehat_engine_free (EhatEngine *e)
{
  if (!e)
    return;
  ehat_network_free (e->net);
  if (e->be)
    e->be->ops->destroy (e->be);
  ehat_model_unref (e->model);
  g_free (e->fallback_reason);
  for (int i = 0; i < 4; i++)
    g_free (e->host[i]);
  g_free (e);
}

EhatModel *
ehat_engine_get_model (EhatEngine *e)
{
  return e->model;
}

EhatBackendKind
ehat_engine_get_backend (EhatEngine *e)
{
  return e->be->kind;
}

EhatPrecision
ehat_engine_get_precision (EhatEngine *e)
{
  return e->precision;
}

const char *
ehat_precision_name (EhatPrecision p)
{
  switch (p) {
    case EHAT_PRECISION_FP32:
      return "fp32";
    case EHAT_PRECISION_TF32:
      return "tf32";
    case EHAT_PRECISION_FP16:
      return "fp16";
    case EHAT_PRECISION_BF16:
      return "bf16";
    default:
      return "auto";
  }
}

const char *
ehat_engine_describe (EhatEngine *e)
{
  return e->be->ops->describe (e->be);
}

const char *
ehat_engine_get_fallback_reason (EhatEngine *e)
{
  return e->fallback_reason;
}

gsize
ehat_engine_get_peak_workspace (EhatEngine *e)
{
  return e->peak_workspace;
}

gboolean
ehat_engine_get_device_memory (EhatEngine *e, gsize *weights, gsize *now,
    gsize *peak)
{
  gsize n = 0, p = 0;

  g_return_val_if_fail (e != NULL, FALSE);
  if (e->be->ops->device_memory)
    e->be->ops->device_memory (e->be, &n, &p);
  if (weights)
    *weights = e->device_weights;
  if (now)
    *now = n;
  if (peak)
    *peak = p;
  return e->be->ops->device_memory != NULL;
}

gsize
ehat_engine_estimate_bytes (EhatEngine *e, int n, int width, int height)
{
  g_return_val_if_fail (e != NULL, 0);
  if (n < 1 || width < 1 || height < 1)
    return 0;
  return ehat_network_estimate_floats (e->net, n, width, height)
      * sizeof (float);
}

/* ehat_engine_process()'s limits: every index of the padded, upscaled
 * batch within gint32 range of rows and far from gsize overflow. */
static gboolean
check_limits (EhatEngine *e, int n, int width, int height, GError **error)
{
  const EhatConfig *c = ehat_model_get_config (e->model);

  if ((gint64) width * c->upscale > 65536 || (gint64) height * c->upscale
      > 65536 || (gint64) n * width * height > (G_GINT64_CONSTANT (1) << 28)) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "input too large: %d image(s) of %d×%d (tile it)", n, width, height);
    return FALSE;
  }
  return TRUE;
}

gboolean
ehat_engine_process (EhatEngine *e, const float *in, int n, int width,
    int height, float *out, GError **error)
{
  gboolean ok;

  g_return_val_if_fail (e != NULL, FALSE);
  if (!in || !out || n < 1 || width < 1 || height < 1) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "invalid input: %d image(s) of %d×%d", n, width, height);
    return FALSE;
  }
  if (!check_limits (e, n, width, height, error))
    return FALSE;
  ok = ehat_network_forward (e->net, in, n, width, height, out, error);
  e->peak_workspace = MAX (e->peak_workspace,
      ehat_network_get_workspace_bytes (e->net));
  return ok;
}

gboolean
ehat_engine_converts_frames (EhatEngine *e)
{
  return e->frames_on_device;
}

gboolean
ehat_engine_process_frame (EhatEngine *e, const EhatFrame *in,
    const EhatFrameDesc *din, EhatFrame *out, const EhatFrameDesc *dout,
    GError **error)
{
  int s = ehat_model_get_config (e->model)->upscale;
  gboolean ok;

  if (dout->width != din->width * s || dout->height != din->height * s) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "output frame %d×%d is not %d× the input's %d×%d", dout->width,
        dout->height, s, din->width, din->height);
    return FALSE;
  }
  if (!e->frames_on_device) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_UNSUPPORTED,
        "%s: frames are converted on the host", ehat_engine_describe (e));
    return FALSE;
  }
  if (!check_limits (e, 1, din->width, din->height, error))
    return FALSE;
  ok = ehat_network_forward_frame (e->net, in, din, out, dout, error);
  if (ok)
    e->device_frames++;
  e->peak_workspace = MAX (e->peak_workspace,
      ehat_network_get_workspace_bytes (e->net));
  return ok;
}

/* Kept for the engine's life once computed: a film's frames must not
 * switch between one pass and tiles as the free memory moves (the backend
 * holds more scratch after the first frame than before it). */
gboolean
ehat_engine_get_device_budget (EhatEngine *e, gsize *budget)
{
  if (!e->budget_known) {
    gsize fr = 0, total = 0, avail, reserve;

    if (!e->be->ops->memory_info
        || !e->be->ops->memory_info (e->be, &fr, &total))
      return FALSE;
    /* the arena a pass replaces is free for it too */
    avail = fr + e->peak_workspace;
    /* the backend's scratch (im2col bands, staging) and the libraries'
     * workspaces, which the estimate leaves out */
    reserve = MAX (avail / 10, (gsize) 256 << 20);
    e->device_budget = avail > reserve ? avail - reserve : 0;
    e->budget_known = TRUE;
  }
  *budget = e->device_budget;
  return TRUE;
}

/* Fixed at the first call for the same reason, on the CPU too: a quarter
 * of MemAvailable moves with every other process on the machine. */
gsize
ehat_engine_get_plan_budget (EhatEngine *e)
{
  if (!e->plan_known) {
    if (!ehat_tile_env_budget (&e->plan_budget)
        && !ehat_engine_get_device_budget (e, &e->plan_budget))
      e->plan_budget = ehat_tile_auto_budget ();
    e->plan_known = TRUE;
  }
  return e->fits ? MIN (e->plan_budget, e->fits) : e->plan_budget;
}

void
ehat_engine_lower_budget (EhatEngine *e, gsize fits)
{
  e->fits = e->fits ? MIN (e->fits, fits) : fits;
}

gsize
ehat_engine_get_fit_limit (EhatEngine *e)
{
  return e->fits;
}

guint64
ehat_engine_get_device_frames (EhatEngine *e)
{
  return e->device_frames;
}

float *
ehat_engine_host_scratch (EhatEngine *e, int slot, gsize n, GError **error)
{
  g_return_val_if_fail (slot >= 0 && slot < 4, NULL);
  if (e->host_n[slot] < n) {
    g_clear_pointer (&e->host[slot], g_free);
    e->host_n[slot] = 0;
    if (n > G_MAXSIZE / sizeof (float)
        || !(e->host[slot] = g_try_new (float, n))) {
      g_set_error (error, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY,
          "cannot allocate %" G_GSIZE_FORMAT " floats of frame buffers", n);
      return NULL;
    }
    e->host_n[slot] = n;
  }
  return e->host[slot];
}
