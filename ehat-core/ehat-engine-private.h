/* libehat (internal) — what ehat-upscale-frame.c needs of the engine and
 * the tiler. */
#ifndef EHAT_ENGINE_PRIVATE_H
#define EHAT_ENGINE_PRIVATE_H

#include "ehat-tiler.h"
#include "ehat-frame-desc.h"

G_BEGIN_DECLS

/* Whether the engine's backend converts video frames itself
 * (EhatBackendOps.frame_input/frame_output). */
gboolean ehat_engine_converts_frames (EhatEngine *e);

/* One whole frame through the network with the conversions on the
 * backend: ehat_engine_process() from in (described by din) into out
 * (dout), s·w × s·h.  EHAT_ERROR_UNSUPPORTED without frame conversion,
 * EHAT_ERROR_INVALID_ARGUMENT when the frame exceeds
 * ehat_engine_process()'s limits. */
gboolean ehat_engine_process_frame (EhatEngine *e, const EhatFrame *in,
    const EhatFrameDesc *din, EhatFrame *out, const EhatFrameDesc *dout,
    GError **error);

/* The activation memory an engine on a device may plan for
 * (ehat_tile_auto_size_for_engine): what the device had free when first
 * asked, plus the arena the engine held then, less a reserve of a tenth
 * (at least 256 MiB) for the backend's scratch and the libraries'
 * workspaces; the same for the engine's life.  FALSE on the CPU. */
gboolean ehat_engine_get_device_budget (EhatEngine *e, gsize *budget);

/* The bytes a pass may take that ehat_tile_auto_size_for_engine() plans
 * with (its budget 0): EHAT_MEMORY_BUDGET_MB when set, else the device
 * budget above, else ehat_tile_auto_budget(); fixed at the first call for
 * the engine's life (every frame of a stream gets one geometry), and at
 * most the limit that out-of-memory retries have set (below). */
gsize ehat_engine_get_plan_budget (EhatEngine *e);

/* After an out-of-memory: a pass of `fits` bytes (ehat_tile_pass_bytes())
 * went through where a larger one did not, so nothing larger is planned
 * or tried on this engine again (ehat_tile_resolve() shrinks explicit
 * tile sizes to it too) — the next frames do not repeat the failed
 * allocations and the retries, nor free and regrow the arena (which makes
 * the CUDA graphs record again).  It only goes down, for the engine's
 * life. */
void ehat_engine_lower_budget (EhatEngine *e, gsize fits);

/* That limit; 0 = none yet. */
gsize ehat_engine_get_fit_limit (EhatEngine *e);

/* Bytes of a pass over n tiles of w×h on engine: the network's workspace
 * and the batch's input and output buffers (what the budgets above are
 * compared with). */
gsize ehat_tile_pass_bytes (EhatEngine *engine, int n, int w, int h);

/* EHAT_MEMORY_BUDGET_MB in bytes, when set to a positive number. */
gboolean ehat_tile_env_budget (gsize *budget);

/* Frames ehat_engine_process_frame() has converted on the device. */
guint64 ehat_engine_get_device_frames (EhatEngine *e);

/* Host buffer `slot` (0–3) of at least n floats, owned by the engine and
 * kept for the next frame (the host path of ehat_upscale_frame()). */
float *ehat_engine_host_scratch (EhatEngine *e, int slot, gsize n,
    GError **error);

/* The options ehat_upscale_tiled() runs a width×height frame with on
 * engine: the automatic batch and tile size resolved.  TRUE when that is
 * one tile, the whole frame. */
gboolean ehat_tile_resolve (EhatEngine *engine, int width, int height,
    EhatTileOptions *o);

/* Whether ehat_upscale_frame() converts this pair of (valid) frames on
 * the device: the backend can, no self-ensemble, and the frame is one
 * tile. */
gboolean ehat_upscale_frame_on_device (EhatEngine *engine,
    const EhatFrame *in, const EhatFrame *out, const EhatTileOptions *opt);

G_END_DECLS

#endif /* EHAT_ENGINE_PRIVATE_H */
