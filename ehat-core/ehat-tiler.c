/* libehat — tiled upscaling.  See ehat-tiler.h for the scheme.
 *
 * Why a band centred in the overlap rather than a ramp over all of it: a
 * tile's output is least accurate near its inner edges, where the network
 * saw no context on one side (every layer's windows, the shifted windows
 * and the overlapping cross-attention reach across).  Centring a narrow
 * cross-fade keeps the outer part of each overlap out of the result.
 * Measured (PSNR of tiled vs whole-frame raw output, golden random-weight
 * models, Set5 LR ×2 images, tile 64, overlap 16; butterfly's actual
 * overlap is 32, woman's 16–24):
 *
 *   blend (LR px)            0      4      8     16
 *   hat-tiny-x2  woman     46.07  46.37  46.43  45.74
 *   hat-small-x3 woman     55.95  56.58  55.95  51.86
 *   ehat-tiny-x2 butterfly        54.85  54.97
 *   ehat-small-x4 butterfly       52.61  52.80
 *   hat-small-x4 butterfly        52.63  52.79
 *
 * so the default band is half the requested overlap.  (With tile origins
 * off the window grid the same tiling gave 15 dB: see n_tiles_1d.)
 */
#include "ehat-tiler.h"
#include "ehat-engine-private.h"
#include "ehat-ensemble.h"

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

#define EHAT_TILE_AUTO_MAX_BYTES ((gsize) 2 << 30)

gboolean
ehat_tile_env_budget (gsize *budget)
{
  const char *env = g_getenv ("EHAT_MEMORY_BUDGET_MB");
  guint64 mb;

  if (!env || !*env || !(mb = g_ascii_strtoull (env, NULL, 10)))
    return FALSE;
  *budget = (gsize) MIN (mb, (guint64) G_MAXSIZE >> 20) << 20;
  return TRUE;
}

gsize
ehat_tile_auto_budget (void)
{
  gchar *text = NULL;
  gsize budget = EHAT_TILE_AUTO_MAX_BYTES;

  if (ehat_tile_env_budget (&budget))
    return budget;
  if (g_file_get_contents ("/proc/meminfo", &text, NULL, NULL)) {
    const char *p = strstr (text, "MemAvailable:");

    if (p) {
      guint64 kb = g_ascii_strtoull (p + strlen ("MemAvailable:"), NULL, 10);

      if (kb > 0)
        budget = MIN (budget, (gsize) MIN (kb / 4, (guint64) G_MAXSIZE >> 10)
            << 10);
    }
    g_free (text);
  }
  return budget;
}

/* The network's workspace, the batch's input and output, and (whole
 * frame) nothing else. */
gsize
ehat_tile_pass_bytes (EhatEngine *engine, int n, int w, int h)
{
  int scale = ehat_model_get_config (ehat_engine_get_model (engine))->upscale;
  gsize net = ehat_engine_estimate_bytes (engine, n, w, h);
  gsize io = (gsize) n * 3 * w * h * (1 + scale * scale) * sizeof (float);

  return net + io;
}

static int n_tiles_1d (int padded, int tile, int overlap, int ws);

/* The useful tile lengths along one axis: for every tile count, the
 * shortest length (a multiple of ws, ≥ min_t) giving it — a longer one
 * with the same count only computes more — and the whole axis. */
typedef struct
{
  int t;                        /* tile length (≤ the axis) */
  int n;                        /* tiles */
  gint64 work;                  /* LR pixels computed: n · padded tile */
} AxisChoice;

static GArray *
axis_choices (int length, int min_t, int max_t, int overlap, int ws)
{
  GArray *a = g_array_new (FALSE, FALSE, sizeof (AxisChoice));
  int padded = round_up (length, ws), last_n = 0, t;

  for (t = min_t; t < length && t <= max_t; t += ws) {
    int n = n_tiles_1d (padded, t, overlap, ws);

    if (n != last_n) {
      AxisChoice c = { t, n, (gint64) n * t };
      g_array_append_val (a, c);
      last_n = n;
    }
  }
  if (length <= max_t) {
    AxisChoice c = { length, 1, padded };
    g_array_append_val (a, c);
  }
  return a;
}

void
ehat_tile_auto_size_for_engine (EhatEngine *engine, int width, int height,
    int overlap, int max_batch, gsize budget, int *tile_width,
    int *tile_height)
{
  const EhatConfig *cfg;
  int ws, scale, batch, min_t, max_t, best_n = G_MAXINT;
  gint64 best_work = G_MAXINT64, chosen_work = G_MAXINT64;
  GArray *cx, *cy;

  g_return_if_fail (engine != NULL && tile_width && tile_height);
  *tile_width = *tile_height = 0;
  if (width < 1 || height < 1)
    return;
  cfg = ehat_model_get_config (ehat_engine_get_model (engine));
  if (cfg->ape) {
    /* An absolute position embedding fixes the size of every pass: the
     * whole frame when it fits in the embedding's grid, else tiles of
     * that size (a smaller tile is padded up to it: no less memory, only
     * more tiles) */
    if (width > cfg->ape_size || height > cfg->ape_size)
      *tile_width = *tile_height = cfg->ape_size;
    return;
  }
  ws = cfg->window_size;
  scale = cfg->upscale;
  /* on a device, its memory (the host's is not what a pass uses there) */
  if (budget == 0)
    budget = ehat_engine_get_plan_budget (engine);
  /* one pass over the whole frame is the reference and recomputes no
   * overlap: take it whenever it fits */
  if ((gint64) width * scale <= 65536 && (gint64) height * scale <= 65536
      && (gint64) width * height <= (G_GINT64_CONSTANT (1) << 28)
      && ehat_tile_pass_bytes (engine, 1, width, height) <= budget)
    return;
  batch = max_batch > 0 ? max_batch : EHAT_TILE_DEFAULT_BATCH;
  min_t = round_up (MAX (overlap, 0) + 2 * ws, ws);
  max_t = 65536 / scale / ws * ws;
  cx = axis_choices (width, min_t, max_t, overlap, ws);
  cy = axis_choices (height, min_t, max_t, overlap, ws);

  /* The work of a tiling is the LR area of all its tiles (measured: CPU
   * time follows it, docs/tiling.md).  Among the geometries whose batch
   * fits, take the one with the fewest tiles (fewest seams, least context
   * lost at tile edges) whose work is within 5 % of the least. */
  for (int pass = 0; pass < 2; pass++)
    for (guint i = 0; i < cx->len; i++)
      for (guint j = 0; j < cy->len; j++) {
        const AxisChoice *x = &g_array_index (cx, AxisChoice, i);
        const AxisChoice *y = &g_array_index (cy, AxisChoice, j);
        gint64 work = x->work * y->work, n = (gint64) x->n * y->n;
        int nb = (int) MIN ((gint64) batch, n);

        if ((gint64) nb * x->t * y->t > (G_GINT64_CONSTANT (1) << 28)
            || ehat_tile_pass_bytes (engine, nb, x->t, y->t) > budget)
          continue;
        if (pass == 0) {
          best_work = MIN (best_work, work);
        } else if (work <= best_work + best_work / 20 && (n < best_n
                || (n == best_n && work < chosen_work))) {
          best_n = (int) n;
          chosen_work = work;
          *tile_width = x->t;
          *tile_height = y->t;
        }
      }
  if (*tile_width == 0) {
    /* nothing fits: the smallest tiles (the out-of-memory retries of
     * ehat_upscale_tiled() take it from there) */
    *tile_width = MIN (min_t, width);
    *tile_height = MIN (min_t, height);
  }
  g_array_free (cx, TRUE);
  g_array_free (cy, TRUE);
}

/* Tile origins are multiples of the window size: window attention cuts
 * the map into ws×ws windows from its origin (and the shifted windows and
 * the overlapping cross-attention from the same grid), so a tile whose
 * origin is off the frame's window grid computes a different function of
 * the same pixels, not just a different edge.  Measured with the golden
 * models: unaligned tiles matched the whole frame to 15 dB, aligned ones
 * to > 40 dB.  Like the reference, the frame is (virtually) reflect-padded
 * to a multiple of the window size, and the last tile ends there.
 *
 * Number of tiles along an axis of padded length `padded` so that
 * neighbours overlap by at least `overlap`: the step between origins, in
 * windows, is at most (tile − overlap) / ws. */
static int
n_tiles_1d (int padded, int tile, int overlap, int ws)
{
  int span_w, step_w;

  if (padded <= tile)
    return 1;
  span_w = (padded - tile) / ws;
  step_w = (tile - overlap) / ws;
  return (span_w + step_w - 1) / step_w + 1;
}

static int
origin_1d (int i, int n, int padded, int tile, int ws)
{
  gint64 span_w = (padded - tile) / ws;

  if (n <= 1)
    return 0;
  /* round (i · span / (n − 1)) windows: consecutive origins are at most
   * ceil (span / (n − 1)) ≤ step windows apart */
  return (int) ((2 * i * span_w + (n - 1)) / (2 * (gint64) (n - 1))) * ws;
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
    int window_size, int scale, int *origins, int max_tiles, float *weights)
{
  int n, i, padded;
  double *centre, *half;

  if (length < 1 || tile < 1 || scale < 1 || overlap < 0 || window_size < 1
      || (!origins && weights))
    return 0;
  if (length <= tile) {
    /* one tile: the whole axis, padded by the engine as the reference */
    tile = padded = length;
  } else {
    if (tile % window_size || overlap > tile - window_size)
      return 0;
    padded = round_up (length, window_size);
  }
  n = n_tiles_1d (padded, tile, overlap, window_size);
  if (!origins)
    return n;
  if (n > max_tiles)
    return 0;
  for (i = 0; i < n; i++)
    origins[i] = origin_1d (i, n, padded, tile, window_size);
  if (!weights)
    return n;

  /* Seam k lies between tiles k and k + 1, centred in their overlap
   * [origins[k + 1], origins[k] + tile), in output pixels. */
  centre = g_new0 (double, MAX (n - 1, 1));
  half = g_new0 (double, MAX (n - 1, 1));
  for (i = 0; i + 1 < n; i++) {
    int a = origins[i + 1], b = origins[i] + tile;
    double band = MIN (blend < 0 ? overlap / 2.0 : blend, b - a);

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

/* PyTorch's 'reflect' padding (edge not repeated); the padding is
 * shorter than a window, hence than the frame when tiling. */
static inline int
reflect (int i, int length)
{
  return i < length ? i : 2 * length - 2 - i;
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
  EhatEnsemble ens;
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
  if (opt->tile_size > G_MAXINT / 2 || opt->tile_height < 0
      || opt->tile_height > G_MAXINT / 2) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "tiler: tile size %d×%d invalid", opt->tile_size, opt->tile_height);
    return FALSE;
  }

  if (!ehat_ensemble_check (opt->ensemble, error))
    return FALSE;
  if (opt->ensemble > 1) {
    /* every call below goes through the ensemble, per tile (or frame) */
    ens.func = func;
    ens.user_data = user_data;
    ens.n_transforms = opt->ensemble;
    ens.scale = scale;
    func = ehat_ensemble_process;
    user_data = &ens;
  }

  tile = opt->tile_size ? opt->tile_size : ehat_tile_auto_size (width,
      height);
  if (tile == 0) {
    tw = width;
    th = height;
  } else {
    int tile_h = round_up (opt->tile_size && opt->tile_height ?
        opt->tile_height : tile, window_size);

    tile = round_up (tile, window_size);
    /* origins step by whole windows, so at least one window must remain
     * between the overlaps */
    if ((width > tile && opt->overlap > tile - window_size)
        || (height > tile_h && opt->overlap > tile_h - window_size)) {
      g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
          "tiler: overlap %d too large for tile size %d×%d (at most the "
          "tile size minus the window size %d)", opt->overlap, tile, tile_h,
          window_size);
      return FALSE;
    }
    tw = MIN (tile, width);
    th = MIN (tile_h, height);
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

  nx = ehat_tile_layout_1d (width, tw, opt->overlap, opt->blend,
      window_size, scale, NULL, G_MAXINT, NULL);
  ny = ehat_tile_layout_1d (height, th, opt->overlap, opt->blend,
      window_size, scale, NULL, G_MAXINT, NULL);
  if (nx < 1 || ny < 1 || nx > G_MAXINT / ny) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "tiler: no tile layout for %d×%d", width, height);
    return FALSE;
  }
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

  ehat_tile_layout_1d (width, tw, opt->overlap, opt->blend, window_size,
      scale, ox, nx, wx);
  ehat_tile_layout_1d (height, th, opt->overlap, opt->blend, window_size,
      scale, oy, ny, wy);


  /* The grid is a product of two 1-D layouts and the weights are
   * separable, so the accumulated weight is sum_y[y] · sum_x[x]. */
  for (k = 0; k < nx; k++) {
    int q;
    for (q = 0; q < otw && ox[k] * scale + q < ow; q++)
      sum_x[ox[k] * scale + q] += wx[(gsize) k * otw + q];
  }
  for (k = 0; k < ny; k++) {
    int q;
    for (q = 0; q < oth && oy[k] * scale + q < oh; q++)
      sum_y[oy[k] * scale + q] += wy[(gsize) k * oth + q];
  }

  memset (out, 0, out_plane * 3 * sizeof (float));

  for (k = 0; k < n_tiles; k += batch) {
    int nb = MIN (batch, n_tiles - k), b;

    for (b = 0; b < nb; b++) {
      int t = k + b, x0 = ox[t % nx], y0 = oy[t / nx], c, y;
      float *dst = in_b + b * in_tile;

      for (c = 0; c < 3; c++)
        for (y = 0; y < th; y++) {
          const float *row = in + c * in_plane
              + (gsize) reflect (y0 + y, height) * width;
          float *d = dst + ((gsize) c * th + y) * tw;

          if (x0 + tw <= width) {
            memcpy (d, row + x0, tw * sizeof (float));
          } else {
            int x;
            for (x = 0; x < tw; x++)
              d[x] = row[reflect (x0 + x, width)];
          }
        }
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
      /* the part past the frame (reflect padding) is dropped */
      int cw = MIN (otw, ow - x0), chh = MIN (oth, oh - y0);

      for (c = 0; c < 3; c++)
        for (y = 0; y < chh; y++) {
          float wyv = wyr[y];
          const float *s = src + ((gsize) c * oth + y) * otw;
          float *d = out + c * out_plane + (gsize) (y0 + y) * ow + x0;

          if (wyv == 0.0f)
            continue;
          for (x = 0; x < cw; x++)
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

/* One step down after an out of memory: first give up batching, then
 * halve the tile while it stays at least two windows wide (not for a
 * model with an absolute position embedding, whose passes all have its
 * size).  FALSE when there is no smaller step. */
static gboolean
shrink_step (const EhatConfig *c, int width, int height, EhatTileOptions *o)
{
  int ws = c->window_size;
  int tile = round_up (o->tile_size, ws);
  int tile_h = round_up (o->tile_height ? o->tile_height : o->tile_size, ws);

  if (o->max_batch != 1 && (tile < width || tile_h < height)) {
    o->max_batch = 1;
    o->tile_size = tile;
    o->tile_height = tile_h;
  } else if (!c->ape && MAX (tile, tile_h) >= 4 * ws) {
    o->tile_size = round_up (MAX (tile / 2, 2 * ws), ws);
    o->tile_height = round_up (MAX (tile_h / 2, 2 * ws), ws);
    o->overlap = MIN (o->overlap, MIN (o->tile_size, o->tile_height) / 2);
  } else {
    return FALSE;
  }
  return TRUE;
}

/* The bytes of the largest pass of the tiling o (resolved) of a
 * width×height frame. */
static gsize
tiling_pass_bytes (EhatEngine *engine, int width, int height,
    const EhatTileOptions *o)
{
  const EhatConfig *c = ehat_model_get_config (ehat_engine_get_model (engine));
  int tw = MIN (round_up (o->tile_size, c->window_size), width);
  int th = MIN (round_up (o->tile_height ? o->tile_height : o->tile_size,
          c->window_size), height);
  int nx, ny, nb;

  if (tw == width && th == height)
    return ehat_tile_pass_bytes (engine, 1, width, height);
  nx = ehat_tile_layout_1d (width, tw, o->overlap, o->blend, c->window_size,
      c->upscale, NULL, G_MAXINT, NULL);
  ny = ehat_tile_layout_1d (height, th, o->overlap, o->blend,
      c->window_size, c->upscale, NULL, G_MAXINT, NULL);
  nb = o->max_batch ? o->max_batch : EHAT_TILE_DEFAULT_BATCH;
  if (nx > 0 && ny > 0 && nx <= G_MAXINT / ny)
    nb = MIN (nb, nx * ny);
  return ehat_tile_pass_bytes (engine, nb, tw, th);
}

gboolean
ehat_tile_resolve (EhatEngine *engine, int width, int height,
    EhatTileOptions *o)
{
  const EhatConfig *c = ehat_model_get_config (ehat_engine_get_model (engine));
  int ws = c->window_size;
  gsize fits = ehat_engine_get_fit_limit (engine);

  /* On the CPU a batch is one longer token matrix: no faster, only more
   * memory (which the automatic size would rather spend on larger tiles,
   * computing less overlap).  Batches are for the GPU. */
  if (o->max_batch == 0
      && ehat_engine_get_backend (engine) == EHAT_BACKEND_CPU)
    o->max_batch = 1;
  if (o->tile_size == 0) {
    /* a tile covering the frame means the whole frame */
    ehat_tile_auto_size_for_engine (engine, width, height, o->overlap,
        o->max_batch, 0, &o->tile_size, &o->tile_height);
    if (o->tile_size == 0)
      o->tile_size = o->tile_height = MAX (width, height);
  }
  if (c->ape) {
    /* no pass can be larger than the embedding's grid (and a smaller tile
     * is padded up to it): an explicit larger tile size means that size */
    o->tile_height = MIN (o->tile_height ? o->tile_height : o->tile_size,
        c->ape_size);
    o->tile_size = MIN (o->tile_size, c->ape_size);
    o->overlap = MIN (o->overlap, c->ape_size - ws);
  }
  /* below what an out of memory on this engine showed to fit, as the
   * retries would have got there, without trying the allocations again */
  while (fits && tiling_pass_bytes (engine, width, height, o) > fits
      && shrink_step (c, width, height, o));
  /* ehat_upscale_tiled_custom()'s test for one tile */
  return round_up (o->tile_size, ws) >= width
      && round_up (o->tile_height ? o->tile_height : o->tile_size, ws)
      >= height;
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
  if (width < 1 || height < 1) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "tiler: invalid size %d×%d", width, height);
    return FALSE;
  }
  /* resolved here so that the retries below start from it */
  ehat_tile_resolve (engine, width, height, &o);

  for (;;) {
    GError *err = NULL;
    EhatTileStats stats;

    if (ehat_upscale_tiled_custom (ehat_engine_tile_func, engine, cfg->upscale,
            cfg->window_size, in, width, height, out, &o, &stats, &err)) {
      stats.retries = retries;
      if (retries)
        ehat_engine_lower_budget (engine, ehat_tile_pass_bytes (engine,
                (stats.n_tiles + stats.n_batches - 1) / stats.n_batches,
                stats.tile_width, stats.tile_height));
      if (stats_out)
        *stats_out = stats;
      return TRUE;
    }
    if (!g_error_matches (err, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY)) {
      g_propagate_error (error, err);
      return FALSE;
    }
    /* Out of memory: one step smaller (stats holds nothing useful here;
     * o is what was attempted) */
    if (!shrink_step (cfg, width, height, &o)) {
      g_propagate_prefixed_error (error, err,
          "out of memory even at tile size %d: ",
          round_up (o.tile_size, cfg->window_size));
      return FALSE;
    }
    g_clear_error (&err);
    retries++;
  }
}
