/* libehat — self-ensemble of a tile-processing function (internal).
 *
 * The "+" results of the super-resolution papers (EDSR+, SwinIR+, HAT+):
 * the network is run on the first n of the eight dihedral transforms of its
 * input (transform t: bit 0 mirrors the columns, bit 1 the rows, bit 2 then
 * transposes), each output is mapped back, and the outputs are averaged.
 * Transform 0 is the identity; n = 2 adds the mirror image, 4 every flip,
 * 8 the transposes too.  The cost is n forward passes; the memory, one
 * more transformed copy of the batch's input and output.
 *
 * Applied per tile by ehat_upscale_tiled_custom(), so that the blending and
 * the out-of-memory retries are those of a plain run.  Transposed tiles
 * stay multiples of the window size; a whole frame of any size is padded
 * by the function after transforming, as tools/ehat_ref's upscale() does.
 */
#ifndef EHAT_ENSEMBLE_H
#define EHAT_ENSEMBLE_H

#include "ehat-tiler.h"

G_BEGIN_DECLS

typedef struct
{
  EhatTileProcessFunc func;
  gpointer user_data;
  int n_transforms;             /* 1, 2, 4 or 8 */
  int scale;
} EhatEnsemble;

/* ehat_engine_process() as an EhatTileProcessFunc (user_data: the
 * engine). */
gboolean ehat_engine_tile_func (gpointer engine, const float *in, int n,
    int width, int height, float *out, GError **error);

/* An EhatTileProcessFunc whose user_data is an EhatEnsemble. */
gboolean ehat_ensemble_process (gpointer ensemble, const float *in, int n,
    int width, int height, float *out, GError **error);

/* Planar image `src` (planes of width×height) under dihedral transform t
 * into dst: planes of width×height, or height×width when t transposes.
 * With accumulate, dst instead receives the inverse transform of src
 * (whose planes are then the transformed size) added to what it holds. */
void ehat_dihedral (const float *src, int planes, int width, int height,
    int t, float *dst, gboolean accumulate);

G_END_DECLS

#endif /* EHAT_ENSEMBLE_H */
