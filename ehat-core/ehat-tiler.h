/* libehat — tiled upscaling on top of ehat_engine_process().
 *
 * Whole-frame inference is the reference; tiling bounds memory and lets
 * equal-sized tiles run as one batch.  A frame is covered by a regular grid
 * of T×T low-resolution tiles (T a multiple of the model's window size)
 * whose origins are spread evenly, on the window grid, so that neighbours
 * overlap by at least O pixels.  Tile outputs are blended with separable raised-cosine weights:
 * across each seam between two neighbours the left/top tile fades out while
 * the right/bottom one fades in, over a band of `blend` LR pixels centred in
 * the overlap.  What lies outside the band (the outer part of each overlap,
 * i.e. the pixels nearest a tile's inner edge, which saw the least context)
 * is discarded.  Frame borders never get a ramp.  The weights sum to one
 * everywhere; the result is also normalised by the accumulated weight.
 *
 * Images are planar float RGB as in ehat.h.
 */
#ifndef EHAT_TILER_H
#define EHAT_TILER_H

#include "ehat.h"
#include "ehat-frame.h"

G_BEGIN_DECLS

typedef struct
{
  /* Tile edge in LR pixels; rounded up to a multiple of the window size.
   * 0 = automatic: ehat_tile_auto_size_for_engine() in
   * ehat_upscale_tiled(), ehat_tile_auto_size() in the custom variant. */
  int tile_size;
  /* Minimum overlap of neighbouring tiles in LR pixels; at most the tile
   * size minus the window size (origins move by whole windows). */
  int overlap;
  /* Tiles per ehat_engine_process() call; 0 = automatic: in
   * ehat_upscale_tiled() 1 on the CPU (where a batch saves no time, only
   * adds memory), else 4. */
  int max_batch;
  /* Width of the cross-fade band in LR pixels, centred in each overlap;
   * -1 = default (half the requested overlap, measured best: see
   * ehat-tiler.c).
   * 0 = hard seam in the middle of the overlap.  Clamped to the overlap. */
  int blend;
  /* Tile height when different from tile_size (only with tile_size > 0);
   * 0 = square tiles.  Rounded up to a multiple of the window size. */
  int tile_height;
  /* Self-ensemble: average the network over this many flipped and
   * transposed copies of every tile (2: and its mirror image, 4: every
   * flip, 8: the transposes too), each mapped back; 0 or 1 = off.  Costs
   * that many forward passes; on the shipped models 8 gains 0.16–0.28 dB
   * PSNR on Set5 (docs/models.md).  See ehat-ensemble.h. */
  int ensemble;
} EhatTileOptions;

#define EHAT_TILE_OPTIONS_INIT { 0, 16, 0, -1, 0, 1 }

typedef struct
{
  int tile_width;               /* LR size of every tile actually run */
  int tile_height;
  int tiles_x;                  /* grid */
  int tiles_y;
  int n_tiles;
  int n_batches;                /* ehat_engine_process() calls */
  int retries;                  /* out-of-memory retries with smaller tiles */
} EhatTileStats;

/* Processes n images of width×height (planar RGB, n×3×h×w floats) into
 * n×3×(s·h)×(s·w) floats.  Same contract as ehat_engine_process(); used by
 * ehat_upscale_tiled_custom() so that the tiler can be tested and reused
 * without a network. */
typedef gboolean (*EhatTileProcessFunc) (gpointer user_data, const float *in,
    int n, int width, int height, float *out, GError **error);

/* Upscales one frame (planar RGB width×height) into out (planar RGB
 * s·width × s·height, s the model's scale), tile by tile.  Frames no larger
 * than a tile are processed whole.  On EHAT_ERROR_OUT_OF_MEMORY from the
 * engine the batch, then the tile size, is reduced and the frame retried.
 * stats_out may be NULL. */
gboolean ehat_upscale_tiled (EhatEngine *engine, const float *in, int width,
    int height, float *out, const EhatTileOptions *opt,
    EhatTileStats *stats_out, GError **error);

/* ehat_upscale_tiled() from one video frame into another, s·w × s·h:
 * in is read as ehat_frame_read() reads it, out written as
 * ehat_frame_write() writes it (alpha, where both formats have it,
 * resized bilinearly; else opaque).  When the engine's backend converts
 * frames itself (CUDA) and the frame is one tile (the usual case on a
 * GPU; not with the self-ensemble), the frame's bytes go to the device
 * and come back as bytes, and the conversions (alpha included) run there,
 * giving the same codes; otherwise the host
 * converts, into buffers the engine keeps for the next frame.  An
 * out-of-memory failure on the device path falls back to the tiled one,
 * counted in stats_out->retries.  An engine runs one frame at a time. */
gboolean ehat_upscale_frame (EhatEngine *engine, const EhatFrame *in,
    const EhatColorInfo *in_color, EhatFrame *out,
    const EhatColorInfo *out_color, const EhatTileOptions *opt,
    EhatTileStats *stats_out, GError **error);

/* The same with any processing function of scale `scale` whose input sizes
 * must be multiples of `window_size` unless the whole frame is passed. */
gboolean ehat_upscale_tiled_custom (EhatTileProcessFunc func,
    gpointer user_data, int scale, int window_size, const float *in,
    int width, int height, float *out, const EhatTileOptions *opt,
    EhatTileStats *stats_out, GError **error);

/* ehat_engine_process() on a whole batch under the self-ensemble of
 * n_transforms (0 or 1 = plain, 2, 4 or 8; see EhatTileOptions.ensemble):
 * what tools/ehat_ref's upscale (model, lr, ensemble=n) computes. */
gboolean ehat_engine_process_ensemble (EhatEngine *engine, const float *in,
    int n, int width, int height, int n_transforms, float *out,
    GError **error);

/* TRUE when n_transforms is a self-ensemble size libehat takes (0, 1, 2,
 * 4 or 8); else an EHAT_ERROR_INVALID_ARGUMENT naming the allowed values. */
gboolean ehat_ensemble_check (int n_transforms, GError **error);

/* The automatic tile size without an engine (ehat_upscale_tiled_custom()):
 * 0 (whole frame) when width·height ≤ 512·512, else 256.  Returned before
 * window rounding. */
int ehat_tile_auto_size (int width, int height);

/* Bytes of activation memory the automatic tile size may plan for on the
 * CPU: a quarter of the host's available memory (MemAvailable of
 * /proc/meminfo), at most 2 GiB, so that a CPU run does not take the
 * machine; the environment variable EHAT_MEMORY_BUDGET_MB overrides both.
 * (An engine on a GPU plans with the device's free memory instead: see
 * ehat_tile_auto_size_for_engine().) */
gsize ehat_tile_auto_budget (void);

/* The automatic tile geometry of ehat_upscale_tiled() (tile_size 0) for
 * engine.  For a model with an absolute position embedding, which fixes
 * every pass at its S×S size: 0×0 when the frame fits in S×S, else S×S
 * (ehat_upscale_tiled() also lowers explicit larger tiles, and an overlap
 * above S minus a window, to what runs).  Otherwise: 0×0 (the whole frame, no seams) when one whole-frame pass fits
 * in budget bytes (ehat_engine_estimate_bytes() plus the frame's input and
 * output).  Otherwise tiles of tile_width×tile_height (multiples of the
 * window size, from overlap + 2 windows up to the frame): of the
 * geometries whose batch of max_batch tiles (0 = default) fits with its
 * buffers, the one with the fewest tiles among those computing at most
 * 5 % more than the least (the work is the LR area of all tiles); the
 * smallest tiles when none fits.  budget 0 = automatic:
 * EHAT_MEMORY_BUDGET_MB when set; for an engine on a GPU, what the device
 * had free when the engine was first asked (plus the activations the
 * engine held then), less a tenth (at least 256 MiB) for scratch, kept
 * for the engine's life so that a film's frames all get one geometry;
 * else ehat_tile_auto_budget().  See docs/tiling.md. */
void ehat_tile_auto_size_for_engine (EhatEngine *engine, int width,
    int height, int overlap, int max_batch, gsize budget, int *tile_width,
    int *tile_height);

/* The 1-D layout along one axis of `length` LR pixels, for tests and
 * tools.  Along an axis no longer than the tile there is one tile, the
 * whole axis.  Otherwise tile must be a multiple of window_size and
 * overlap ≤ tile − window_size; origins are multiples of window_size and
 * the last tile ends at length rounded up to the window size (the frame is
 * reflect-padded there, as the reference pads it).  Returns the number of
 * tiles (0 on invalid arguments or more than max_tiles) and, when origins
 * is not NULL, their origins and, when weights is not NULL, the blend
 * weight of every output pixel of every tile: n × (t·scale) floats, t the
 * tile length used (min (tile, length)). */
int ehat_tile_layout_1d (int length, int tile, int overlap, int blend,
    int window_size, int scale, int *origins, int max_tiles, float *weights);

G_END_DECLS

#endif /* EHAT_TILER_H */
