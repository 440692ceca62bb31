/* libehat — ehat_upscale_frame(): video frame in, video frame out, with
 * the colour conversions on the device where the backend can do them. */
#include "ehat-tiler.h"
#include "ehat-engine-private.h"
#include "ehat-frame-desc.h"

/* The host path: ehat_frame_read → ehat_upscale_tiled → ehat_frame_write,
 * in the engine's scratch buffers. */
static gboolean
upscale_on_host (EhatEngine *engine, const EhatFrame *in,
    const EhatColorInfo *in_color, EhatFrame *out,
    const EhatColorInfo *out_color, const EhatTileOptions *opt,
    EhatTileStats *stats, GError **error)
{
  int w = in->width, h = in->height, ow = out->width, oh = out->height;
  gboolean alpha = ehat_pixel_format_has_alpha (in->format)
      && ehat_pixel_format_has_alpha (out->format);
  float *rgb_in, *rgb_out, *a_in = NULL, *a_out = NULL;

  if (!(rgb_in = ehat_engine_host_scratch (engine, 0, (gsize) 3 * w * h,
              error))
      || !(rgb_out = ehat_engine_host_scratch (engine, 1,
              (gsize) 3 * ow * oh, error))
      || (alpha && (!(a_in = ehat_engine_host_scratch (engine, 2,
                      (gsize) w * h, error))
              || !(a_out = ehat_engine_host_scratch (engine, 3,
                      (gsize) ow * oh, error)))))
    return FALSE;
  if (!ehat_frame_read (in, in_color, rgb_in, error)
      || !ehat_upscale_tiled (engine, rgb_in, w, h, rgb_out, opt, stats,
          error))
    return FALSE;
  if (alpha) {
    if (!ehat_frame_read_alpha (in, a_in, error))
      return FALSE;
    ehat_plane_resize_bilinear (a_in, w, h, a_out, ow, oh);
  }
  return ehat_frame_write (rgb_out, a_out, out_color, out, error);
}

gboolean
ehat_upscale_frame_on_device (EhatEngine *engine, const EhatFrame *in,
    const EhatFrame *out, const EhatTileOptions *opt)
{
  EhatTileOptions o = EHAT_TILE_OPTIONS_INIT;

  if (opt)
    o = *opt;
  return ehat_engine_converts_frames (engine) && o.ensemble <= 1
      && ehat_tile_resolve (engine, in->width, in->height, &o);
}

gboolean
ehat_upscale_frame (EhatEngine *engine, const EhatFrame *in,
    const EhatColorInfo *in_color, EhatFrame *out,
    const EhatColorInfo *out_color, const EhatTileOptions *opt,
    EhatTileStats *stats_out, GError **error)
{
  EhatTileOptions o = EHAT_TILE_OPTIONS_INIT;
  EhatTileStats stats = { 0, };
  EhatFrameDesc din, dout;
  int s, retried = 0;

  if (!engine) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "upscale frame: NULL engine");
    return FALSE;
  }
  if (!ehat_frame_describe (in, in_color, &din, error)
      || !ehat_frame_describe (out, out_color, &dout, error))
    return FALSE;
  s = ehat_model_get_config (ehat_engine_get_model (engine))->upscale;
  if ((gint64) out->width != (gint64) in->width * s
      || (gint64) out->height != (gint64) in->height * s) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "upscale frame: output %d×%d is not %d× the input's %d×%d",
        out->width, out->height, s, in->width, in->height);
    return FALSE;
  }
  if (opt)
    o = *opt;
  if (!ehat_ensemble_check (o.ensemble, error))
    return FALSE;

  if (ehat_upscale_frame_on_device (engine, in, out, &o)) {
    GError *err = NULL;

    if (ehat_engine_process_frame (engine, in, &din, out, &dout, &err)) {
      stats.tile_width = in->width;
      stats.tile_height = in->height;
      stats.tiles_x = stats.tiles_y = stats.n_tiles = stats.n_batches = 1;
      if (stats_out)
        *stats_out = stats;
      return TRUE;
    }
    /* too large for one pass after all: the tiler takes it from here,
     * below the whole frame (and so do later frames: no device pass of
     * this size is tried again on this engine), with its retries */
    if (!g_error_matches (err, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY)) {
      g_propagate_error (error, err);
      return FALSE;
    }
    g_clear_error (&err);
    ehat_engine_lower_budget (engine, ehat_tile_pass_bytes (engine, 1,
            in->width, in->height) - 1);
    retried = 1;
  }

  if (!upscale_on_host (engine, in, in_color, out, out_color, &o, &stats,
          error))
    return FALSE;
  stats.retries += retried;
  if (stats_out)
    *stats_out = stats;
  return TRUE;
}
