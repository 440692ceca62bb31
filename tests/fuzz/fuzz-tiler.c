/* libFuzzer target: tiler geometry (ehat_upscale_tiled_custom()).
 *
 * The input bytes choose a frame size (1..48 × 1..48, or up to 300 × 300
 * when asked for: large frames cost ~10-40 ms per run), scale (2..4),
 * window size, tile size, overlap, batch, blend width and self-ensemble;
 * the "network" is a nearest-neighbour upscaler, so no model runs and the
 * exact expected output is known (it commutes with the ensemble's flips
 * and transposes, so the ensemble must give it back too): with weights that sum to one and a normalisation by the
 * accumulated weight, the tiled result must equal the nearest-neighbour
 * upscale of the whole frame (to float rounding).  Checked for every input:
 *   - valid options: success, every output pixel written (the output is
 *     pre-filled with NaN), finite and equal to the expected value; every
 *     call of the process function gets a sane batch whose sizes are
 *     multiples of the window size unless they span the frame;
 *   - invalid options (negative sizes, overlap too large for the tile,
 *     window 0, sizes that overflow): FALSE with an EHAT_ERROR, no crash,
 *     and the process function never called with bad sizes.
 * Seeds: tests/fuzz/corpus/tiler/ (16-byte records, see decode()). */
#include "ehat.h"
#include "ehat-tiler.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t * data, size_t size);

#define MAX_SIDE 300
#define SMALL_SIDE 48

typedef struct
{
  int width, height, scale, window;
  EhatTileOptions opt;
  gboolean expect_ok;           /* options valid by the documented rules */
  int calls;
  int max_batch_seen;
} Case;

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  g_log_set_always_fatal (G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL
      | G_LOG_LEVEL_WARNING);
  return 0;
}

static int
round_up (int v, int m)
{
  return (v + m - 1) / m * m;
}

/* The per-pixel loops of the harness are left uninstrumented (no
 * coverage callbacks, no ASan/UBSan checks): they were most of the run
 * time.  The buffers the tiler hands over are still bounds-checked, by
 * instrumented touches of their first and last elements in nn_process(). */
#if defined(__clang__)
#define HOT __attribute__((no_sanitize ("address", "undefined", "coverage")))
#else
#define HOT
#endif

HOT static void
nn_upscale (const float *in, int n, int w, int h, int s, float *out)
{
  int ow = w * s, oh = h * s;

  for (int b = 0; b < n; b++)
    for (int ch = 0; ch < 3; ch++) {
      const float *ip = in + ((gsize) b * 3 + ch) * w * h;
      float *op = out + ((gsize) b * 3 + ch) * ow * oh;
      for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++)
          op[(gsize) y * ow + x] = ip[(gsize) (y / s) * w + x / s];
    }
}

/* A w×h tile of an fw×fh frame: at most a window larger than the frame
 * (the padding), and whole windows unless it is the whole axis. */
static gboolean
tile_fits (const Case *c, int w, int h, int fw, int fh)
{
  return w <= fw + c->window && h <= fh + c->window
      && (w == fw || w % c->window == 0) && (h == fh || h % c->window == 0);
}

/* Nearest-neighbour "network": out = in repeated scale×scale. */
static gboolean
nn_process (gpointer user_data, const float *in, int n, int w, int h,
    float *out, GError **error)
{
  Case *c = user_data;
  int s = c->scale;
  gsize n_in, n_out;
  volatile float touch;
  int limit = c->opt.max_batch ? c->opt.max_batch : 4;

  c->calls++;
  /* an ensemble of 8 also runs transposed tiles */
  if (n < 1 || n > limit || w < 1 || h < 1
      || !(tile_fits (c, w, h, c->width, c->height)
          || (c->opt.ensemble == 8 && tile_fits (c, w, h, c->height,
                  c->width))))
    abort ();
  c->max_batch_seen = MAX (c->max_batch_seen, n);

  /* ASan: both buffers must span the whole batch */
  n_in = (gsize) n * 3 * w * h;
  n_out = n_in * s * s;
  touch = in[0] + in[n_in - 1];
  (void) touch;
  out[0] = 0.0f;
  out[n_out - 1] = 0.0f;

  nn_upscale (in, n, w, h, s, out);
  return TRUE;
}

/* TRUE when out is the nearest-neighbour upscale of in, finite everywhere
 * (a NaN left from the pre-fill means a pixel was never written). */
HOT static gboolean
check_output (const float *in, int width, int height, int s,
    const float *out)
{
  int ow = width * s, oh = height * s;

  for (int ch = 0; ch < 3; ch++)
    for (int y = 0; y < oh; y++)
      for (int x = 0; x < ow; x++) {
        float v = out[((gsize) ch * oh + y) * ow + x];
        float e = in[((gsize) ch * height + y / s) * width + x / s];
        if (!isfinite (v) || fabsf (v - e) > 1e-4f)
          return FALSE;
      }
  return TRUE;
}

HOT static void
fill (float *in, gsize in_n, float *out, gsize out_n)
{
  /* distinct, exactly representable values per pixel and channel */
  for (gsize i = 0; i < in_n; i++)
    in[i] = (float) ((i * 2654435761u) % 65521u) / 65521.0f;
  for (gsize i = 0; i < out_n; i++)
    out[i] = NAN;
}

static int
i8 (const uint8_t * d, size_t size, size_t i)
{
  return i < size ? (int8_t) d[i] : 0;
}

static int
u8 (const uint8_t * d, size_t size, size_t i)
{
  return i < size ? d[i] : 0;
}

/* Input layout (missing bytes read as 0):
 *   0-1  width  (1 + u16 % 48)       2-3  height (1 + u16 % 48)
 *   4    scale  (2 + b % 3)          5    window (1, 2, 4, 8, 16 or 7)
 *   6    tile   (0 = auto; else b)   7    overlap (b % 64)
 *   8    max_batch (b % 9)           9    blend (b % 40 − 1)
 *   10   flags: bit 0 → take raw signed tile/overlap/batch/blend from
 *        bytes 11-14 (negative values allowed); bit 1 → window from byte 15
 *        raw (0 allowed); bit 2 → scale 1 + (b4 % 6) (1..6, 5 and 6 are
 *        valid for the tiler too); bit 3 → huge tile size;
 *        bit 4 → oversized frame (must be refused before any read);
 *        bit 5 → large frame: sides 1 + u16 % 300;
 *        bit 6 → self-ensemble of 1 << (byte 15 % 4) transforms;
 *        bit 7 → self-ensemble raw from byte 15 (mostly invalid). */
static void
decode (const uint8_t * d, size_t size, Case *c)
{
  static const int windows[] = { 1, 2, 4, 8, 16, 7 };
  int flags = u8 (d, size, 10);
  int side = flags & 32 ? MAX_SIDE : SMALL_SIDE;

  memset (c, 0, sizeof *c);
  c->width = 1 + (u8 (d, size, 0) | u8 (d, size, 1) << 8) % side;
  c->height = 1 + (u8 (d, size, 2) | u8 (d, size, 3) << 8) % side;
  c->scale = 2 + u8 (d, size, 4) % 3;
  c->window = windows[u8 (d, size, 5) % 6];
  c->opt.tile_size = u8 (d, size, 6);
  c->opt.overlap = u8 (d, size, 7) % 64;
  c->opt.max_batch = u8 (d, size, 8) % 9;
  c->opt.blend = u8 (d, size, 9) % 40 - 1;
  if (flags & 1) {
    c->opt.tile_size = i8 (d, size, 11);
    c->opt.overlap = i8 (d, size, 12);
    c->opt.max_batch = i8 (d, size, 13);
    c->opt.blend = i8 (d, size, 14);
  }
  if (flags & 2)
    c->window = i8 (d, size, 15);
  if (flags & 4)
    c->scale = 1 + u8 (d, size, 4) % 6;
  if (flags & 8)
    c->opt.tile_size = G_MAXINT - u8 (d, size, 6);
  c->opt.ensemble = 1;
  if (flags & 64)
    c->opt.ensemble = 1 << (u8 (d, size, 15) % 4);
  if (flags & 128)
    c->opt.ensemble = i8 (d, size, 15);
}

/* Output values the tiler computes for a valid case: tiles × tile output
 * × transforms (the network's and the blending's work). */
#define MAX_WORK 40000000.0
static double
work (const Case *c)
{
  const EhatTileOptions *o = &c->opt;
  int tile = o->tile_size ? o->tile_size : ehat_tile_auto_size (c->width,
      c->height);
  int tw, th, nx, ny;

  if (tile == 0)
    return 3.0 * c->width * c->height * c->scale * c->scale
        * MAX (o->ensemble, 1);
  tile = round_up (tile, c->window);
  tw = MIN (tile, c->width);
  th = MIN (o->tile_height ? round_up (o->tile_height, c->window) : tile,
      c->height);
  nx = ehat_tile_layout_1d (c->width, tw, o->overlap, o->blend, c->window,
      c->scale, NULL, G_MAXINT, NULL);
  ny = ehat_tile_layout_1d (c->height, th, o->overlap, o->blend, c->window,
      c->scale, NULL, G_MAXINT, NULL);
  return (double) MAX (nx, 1) * MAX (ny, 1) * tw * th * 3.0 * c->scale
      * c->scale * MAX (o->ensemble, 1);
}

static gboolean
options_valid (const Case *c)
{
  const EhatTileOptions *o = &c->opt;
  int tile;

  if (c->window < 1 || o->tile_size < 0 || o->overlap < 0
      || o->max_batch < 0 || o->blend < -1 || o->tile_size > G_MAXINT / 2)
    return FALSE;
  if (o->ensemble != 0 && o->ensemble != 1 && o->ensemble != 2
      && o->ensemble != 4 && o->ensemble != 8)
    return FALSE;
  tile = o->tile_size ? o->tile_size : ehat_tile_auto_size (c->width,
      c->height);
  if (tile == 0)
    return TRUE;
  tile = round_up (tile, c->window);
  if (c->width <= tile && c->height <= tile)
    return TRUE;
  return o->overlap <= tile - c->window;
}

static void
oversized (Case *c)
{
  /* sizes whose output would overflow int: must be refused up front,
   * the 1-float buffers are never large enough */
  float in[3] = { 0 }, out[3] = { 0 };
  g_autoptr (GError) err = NULL;
  int scale = MAX (c->scale, 2), big = G_MAXINT / scale + 1;

  if (ehat_upscale_tiled_custom (nn_process, c, scale, c->window > 0
          ? c->window : 1, in, big, 1, out, &c->opt, NULL, &err)
      || !g_error_matches (err, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT))
    abort ();
  g_clear_error (&err);
  if (ehat_upscale_tiled_custom (nn_process, c, scale, c->window > 0
          ? c->window : 1, in, 1, big, out, &c->opt, NULL, &err)
      || !g_error_matches (err, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT))
    abort ();
  g_clear_error (&err);
  if (ehat_upscale_tiled_custom (nn_process, c, c->scale, 1, in, 0, 1, out,
          NULL, NULL, &err) || !err)
    abort ();
  g_clear_error (&err);
  if (ehat_upscale_tiled_custom (nn_process, c, c->scale, 1, in, 1, -5, out,
          NULL, NULL, &err) || !err)
    abort ();
  if (c->calls)
    abort ();
}

int
LLVMFuzzerTestOneInput (const uint8_t * data, size_t size)
{
  Case c;
  g_autoptr (GError) err = NULL;
  EhatTileStats stats;
  gsize in_n, out_n;
  float *in, *out;
  gboolean ok;
  int s;

  decode (data, size, &c);
  if (u8 (data, size, 10) & 16) {
    oversized (&c);
    return 0;
  }
  s = c.scale;
  in_n = (gsize) 3 * c.width * c.height;
  out_n = in_n * s * s;
  in = g_new (float, in_n);
  out = g_new (float, out_n);
  fill (in, in_n, out, out_n);

  c.expect_ok = options_valid (&c);
  /* A valid but huge job (an overlap of nearly the whole tile steps the
   * tiles by a pixel or two: 300×300 of them) is correct, only slow; it
   * would exceed libFuzzer's per-input timeout under ASan, so it is left
   * out.  What it exercises, the small cases exercise too. */
  if (c.expect_ok && work (&c) > MAX_WORK) {
    g_free (in);
    g_free (out);
    return 0;
  }
  ok = ehat_upscale_tiled_custom (nn_process, &c, c.scale, c.window, in,
      c.width, c.height, out, &c.opt, &stats, &err);

  if (!ok) {
    if (!g_error_matches (err, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT)
        && !g_error_matches (err, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY))
      abort ();
    /* a refusal of valid options is a finding too */
    if (c.expect_ok)
      abort ();
  } else {
    if (err || !c.expect_ok || c.calls < 1 || stats.n_tiles < 1
        || stats.n_tiles != stats.tiles_x * stats.tiles_y
        /* the ensemble calls the network once per transform and batch */
        || stats.n_batches * MAX (c.opt.ensemble, 1) != c.calls
        || stats.tile_width < 1
        || stats.tile_height < 1)
      abort ();
    if (!check_output (in, c.width, c.height, s, out))
      abort ();
  }
  g_free (in);
  g_free (out);
  return 0;
}
