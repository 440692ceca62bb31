/* libehat — tiled upscaling.  See ehat-tiler.h for the scheme.
 *
 * Why a band centred in the overlap rather than a ramp over all of it: a
 * tile's output is least accurate near its inner edges, where the network
 * saw no context on one side (every layer's windows, the shifted windows
 * and the overlapping cross-attention reach across).  Centring the cross-
 * fade keeps each tile's outer overlap/2·(1 − blend/overlap) pixels out of
 * the result.  Measured with the golden random-weight models on Set5 and
 * Urban100 images (tests/test-tiler.c, tile 64, overlap 16), see the
 * numbers in the default below.
 */
#include "ehat-tiler.h"

#include <math.h>
#include <string.h>

#define EHAT_TILE_DEFAULT_BATCH 4
#define EHAT_TILE_AUTO_WHOLE_AREA (512 * 512)
#define EHAT_TILE_AUTO_SIZE 256

int
ehat_tile_auto_size (int width, int height)
{
  if ((gint64) width * height <= EHAT_TILE_AUTO_WHOLE_AREA)
    return 0;
  return EHAT_TILE_AUTO_SIZE;
}

static int
round_up (int v, int m)
{
  return (v + m - 1) / m * m;
}

/* Number of tiles of length `tile` so that neighbours overlap by at least
 * `overlap` when the origins are spread evenly over [0, length − tile]. */
static int
n_tiles_1d (int length, int tile, int overlap)
{
  int step;

  if (length <= tile)
    return 1;
  step = tile - overlap;
  return (length - overlap + step - 1) / step;
}

static int
origin_1d (int i, int n, int length, int tile)
{
  gint64 span = length - tile;

  if (n <= 1)
    return 0;
  /* round (i · span / (n − 1)); consecutive origins are at most
   * ceil (span / (n − 1)) ≤ tile − overlap apart */
  return (int) ((2 * i * span + (n - 1)) / (2 * (gint64) (n - 1)));
}

/* Raised-cosine fade-in across a seam at output position centre ± half,
 * evaluated at the centre of output pixel p.  The fade-out of the other
 * tile is 1 − this, so the pair sums to one.  half == 0: a hard seam;
 * a pixel whose centre lies exactly on it goes to the later tile. */
static double
fade_in (int p, double centre, double half)
{
  double x = p + 0.5, t;

  if (half <= 0.0)
    return x >= centre ? 1.0 : 0.0;
  t = (x - (centre - half)) / (2.0 * half);
  if (t <= 0.0)
    return 0.0;
  if (t >= 1.0)
    return 1.0;
  return 0.5 - 0.5 * cos (G_PI * t);
}

int
ehat_tile_layout_1d (int length, int tile, int overlap, int blend,
    int scale, int *origins, int max_tiles, float *weights)
{
  int n, i;
  double *centre, *half;

  if (length < 1 || tile < 1 || scale < 1 || overlap < 0 || !origins)
    return 0;
  if (tile > length)
    tile = length;
  if (length > tile && overlap >= tile)
    return 0;
  n = n_tiles_1d (length, tile, overlap);
  if (n > max_tiles)
    return 0;
  for (i = 0; i < n; i++)
    origins[i] = origin_1d (i, n, length, tile);
  if (!weights)
    return n;

  /* Seam k lies between tiles k and k + 1, centred in their overlap
   * [origins[k + 1], origins[k] + tile), in output pixels. */
  centre = g_new0 (double, MAX (n - 1, 1));
  half = g_new0 (double, MAX (n - 1, 1));
  for (i = 0; i + 1 < n; i++) {
    int a = origins[i + 1], b = origins[i] + tile;
    double band = blend < 0 ? (b - a) / 2.0 : MIN (blend, b - a);

    centre[i] = (a + b) * scale / 2.0;
    half[i] = band * scale / 2.0;
  }
  /* Bands of neighbouring seams must not overlap, or three tiles would
   * share a pixel and a fade would be cut short. */
  for (i = 0; i + 1 < n; i++) {
    if (i > 0)
      half[i] = MIN (half[i], (centre[i] - centre[i - 1]) / 2.0);
    if (i + 2 < n)
      half[i] = MIN (half[i], (centre[i + 1] - centre[i]) / 2.0);
  }
  for (i = 0; i < n; i++) {
    float *w = weights + (gsize) i * tile * scale;
    int q;

    for (q = 0; q < tile * scale; q++) {
      int p = origins[i] * scale + q;
      double v = 1.0;

      if (i > 0)
        v *= fade_in (p, centre[i - 1], half[i - 1]);
      if (i + 1 < n)
        v *= 1.0 - fade_in (p, centre[i], half[i]);
      w[q] = (float) v;
    }
  }
  g_free (centre);
  g_free (half);
  return n;
}

static gboolean
check_size (gsize a, gsize b, gsize * result)
{
  if (b != 0 && a > G_MAXSIZE / b)
    return FALSE;
  *result = a * b;
  return TRUE;
}

gboolean
ehat_upscale_tiled_custom (EhatTileProcessFunc func, gpointer user_data,
    int scale, int window_size, const float *in, int width, int height,
    float *out, const EhatTileOptions *opt, EhatTileStats *stats_out,
    GError **error)
{
  EhatTileOptions defaults = EHAT_TILE_OPTIONS_INIT;
  EhatTileStats stats = { 0, };
  int tile, tw, th, nx, ny, n_tiles, batch, ow, oh, otw, oth;
  int *ox = NULL, *oy = NULL;
  float *wx = NULL, *wy = NULL, *sum_x = NULL, *sum_y = NULL;
  float *in_b = NULL, *out_b = NULL;
  gsize in_plane, out_plane, in_tile, out_tile, bytes;
  gboolean ok = FALSE;
  int k;

  if (!opt)
    opt = &defaults;
  if (!func || !in || !out) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "tiler: NULL function or image");
    return FALSE;
  }
  if (width < 1 || height < 1 || scale < 1 || window_size < 1) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "tiler: invalid size %d×%d, scale %d, window %d", width, height,
        scale, window_size);
    return FALSE;
  }
  if (width > G_MAXINT / scale || height > G_MAXINT / scale) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "tiler: frame %d×%d too large for scale %d", width, height, scale);
    return FALSE;
  }
  if (opt->tile_size < 0 || opt->overlap < 0 || opt->max_batch < 0
      || opt->blend < -1) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "tiler: negative tile size (%d), overlap (%d), batch (%d) or "
        "blend (%d)", opt->tile_size, opt->overlap, opt->max_batch,
        opt->blend);
    return FALSE;
  }
  if (opt->tile_size > G_MAXINT / 2) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "tiler: tile size %d too large", opt->tile_size);
    return FALSE;
  }

  tile = opt->tile_size ? opt->tile_size : ehat_tile_auto_size (width,
      height);
  if (tile == 0) {
    tw = width;
    th = height;
  } else {
    tile = round_up (tile, window_size);
    if (opt->overlap >= tile && (width > tile || height > tile)) {
      g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
          "tiler: overlap %d must be smaller than the tile size %d",
          opt->overlap, tile);
      return FALSE;
    }
    tw = MIN (tile, width);
    th = MIN (tile, height);
  }

  ow = width * scale;
  oh = height * scale;
  otw = tw * scale;
  oth = th * scale;

  stats.tile_width = tw;
  stats.tile_height = th;

  /* One tile: no copies, no weights — exactly the whole-frame result. */
  if (tw == width && th == height) {
    stats.tiles_x = stats.tiles_y = stats.n_tiles = stats.n_batches = 1;
    if (!func (user_data, in, 1, width, height, out, error))
      return FALSE;
    if (stats_out)
      *stats_out = stats;
    return TRUE;
  }

  nx = n_tiles_1d (width, tw, opt->overlap);
  ny = n_tiles_1d (height, th, opt->overlap);
  n_tiles = nx * ny;
  batch = opt->max_batch ? opt->max_batch : EHAT_TILE_DEFAULT_BATCH;
  batch = MIN (batch, n_tiles);

  in_plane = (gsize) width * height;
  out_plane = (gsize) ow * oh;
  in_tile = (gsize) 3 * tw * th;
  out_tile = (gsize) 3 * otw * oth;
  if (!check_size (out_tile, batch, &bytes)
      || !check_size (bytes, sizeof (float), &bytes)) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY,
        "tiler: batch buffer size overflows");
    return FALSE;
  }

  ox = g_new (int, nx);
  oy = g_new (int, ny);
  wx = g_try_new (float, (gsize) nx * otw);
  wy = g_try_new (float, (gsize) ny * oth);
  sum_x = g_try_new0 (float, ow);
  sum_y = g_try_new0 (float, oh);
  in_b = g_try_new (float, in_tile * batch);
  out_b = g_try_malloc (bytes);
  if (!wx || !wy || !sum_x || !sum_y || !in_b || !out_b) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY,
        "tiler: cannot allocate %" G_GSIZE_FORMAT " bytes of tile buffers",
        bytes + in_tile * batch * sizeof (float));
    goto done;
  }

  ehat_tile_layout_1d (width, tw, opt->overlap, opt->blend, scale, ox, nx,
      wx);
  ehat_tile_layout_1d (height, th, opt->overlap, opt->blend, scale, oy, ny,
      wy);

  /* The grid is a product of two 1-D layouts and the weights are
   * separable, so the accumulated weight is sum_y[y] · sum_x[x]. */
  for (k = 0; k < nx; k++) {
    int q;
    for (q = 0; q < otw; q++)
      sum_x[ox[k] * scale + q] += wx[(gsize) k * otw + q];
  }
  for (k = 0; k < ny; k++) {
    int q;
    for (q = 0; q < oth; q++)
      sum_y[oy[k] * scale + q] += wy[(gsize) k * oth + q];
  }

  memset (out, 0, out_plane * 3 * sizeof (float));

  for (k = 0; k < n_tiles; k += batch) {
    int nb = MIN (batch, n_tiles - k), b;

    for (b = 0; b < nb; b++) {
      int t = k + b, x0 = ox[t % nx], y0 = oy[t / nx], c, y;
      float *dst = in_b + b * in_tile;

      for (c = 0; c < 3; c++)
        for (y = 0; y < th; y++)
          memcpy (dst + ((gsize) c * th + y) * tw,
              in + c * in_plane + (gsize) (y0 + y) * width + x0,
              tw * sizeof (float));
    }

    if (!func (user_data, in_b, nb, tw, th, out_b, error))
      goto done;
    stats.n_batches++;

    for (b = 0; b < nb; b++) {
      int t = k + b, ix = t % nx, iy = t / nx;
      int x0 = ox[ix] * scale, y0 = oy[iy] * scale, c, y, x;
      const float *src = out_b + b * out_tile;
      const float *wxr = wx + (gsize) ix * otw;
      const float *wyr = wy + (gsize) iy * oth;

      for (c = 0; c < 3; c++)
        for (y = 0; y < oth; y++) {
          float wyv = wyr[y];
          const float *s = src + ((gsize) c * oth + y) * otw;
          float *d = out + c * out_plane + (gsize) (y0 + y) * ow + x0;

          if (wyv == 0.0f)
            continue;
          for (x = 0; x < otw; x++)
            d[x] += wyv * wxr[x] * s[x];
        }
    }
  }

  for (k = 0; k < 3; k++) {
    int y, x;
    for (y = 0; y < oh; y++) {
      float *d = out + k * out_plane + (gsize) y * ow;
      for (x = 0; x < ow; x++)
        d[x] /= sum_y[y] * sum_x[x];
    }
  }

  stats.tiles_x = nx;
  stats.tiles_y = ny;
  stats.n_tiles = n_tiles;
  if (stats_out)
    *stats_out = stats;
  ok = TRUE;

done:
  g_free (ox);
  g_free (oy);
  g_free (wx);
  g_free (wy);
  g_free (sum_x);
  g_free (sum_y);
  g_free (in_b);
  g_free (out_b);
  return ok;
}

static gboolean
engine_process (gpointer user_data, const float *in, int n, int width,
    int height, float *out, GError **error)
{
  return ehat_engine_process (user_data, in, n, width, height, out, error);
}

gboolean
ehat_upscale_tiled (EhatEngine *engine, const float *in, int width,
    int height, float *out, const EhatTileOptions *opt,
    EhatTileStats *stats_out, GError **error)
{
  EhatTileOptions o = EHAT_TILE_OPTIONS_INIT;
  const EhatConfig *cfg;
  int retries = 0;

  if (!engine) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "tiler: NULL engine");
    return FALSE;
  }
  cfg = ehat_model_get_config (ehat_engine_get_model (engine));
  if (opt)
    o = *opt;

  for (;;) {
    GError *err = NULL;
    EhatTileStats stats;
    int tile;

    if (ehat_upscale_tiled_custom (engine_process, engine, cfg->upscale,
            cfg->window_size, in, width, height, out, &o, &stats, &err)) {
      stats.retries = retries;
      if (stats_out)
        *stats_out = stats;
      return TRUE;
    }
    if (!g_error_matches (err, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY)) {
      g_propagate_error (error, err);
      return FALSE;
    }
    /* Out of memory: first give up batching, then halve the tile while it
     * stays at least two windows wide.  stats holds nothing useful here,
     * so recompute what was attempted. */
    tile = o.tile_size ? o.tile_size : ehat_tile_auto_size (width, height);
    if (tile == 0)
      tile = MAX (width, height);
    tile = round_up (tile, cfg->window_size);
    if (o.max_batch != 1 && (tile < width || tile < height)) {
      o.max_batch = 1;
      o.tile_size = tile;
    } else if (tile >= 4 * cfg->window_size) {
      o.tile_size = round_up (tile / 2, cfg->window_size);
      o.overlap = MIN (o.overlap, o.tile_size / 2);
    } else {
      g_propagate_prefixed_error (error, err,
          "out of memory even at tile size %d: ", tile);
      return FALSE;
    }
    g_clear_error (&err);
    retries++;
  }
}
