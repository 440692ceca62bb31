/* Tiled vs whole-frame upscaling (ehat-tiler). */
#include "ehat.h"
#include "ehat-tiler.h"
#include "ehat-ensemble.h"
#include "ehat-png.h"

#include <math.h>
#include <string.h>

/* ---- a context-free stand-in for the network ---------------------------
 * Each output pixel depends only on its own input pixel, so any correct
 * tiling with weights summing to one reproduces the whole-frame result
 * (up to float rounding). */
typedef struct
{
  int scale;
  int calls;
  int max_n;
  int last_w, last_h;
} FakeNet;

static gboolean
fake_process (gpointer user_data, const float *in, int n, int width,
    int height, float *out, GError **error)
{
  FakeNet *net = user_data;
  int s = net->scale, b, c, y, x;

  net->calls++;
  net->max_n = MAX (net->max_n, n);
  net->last_w = width;
  net->last_h = height;
  for (b = 0; b < n; b++)
    for (c = 0; c < 3; c++)
      for (y = 0; y < height * s; y++)
        for (x = 0; x < width * s; x++) {
          float v = in[(((gsize) b * 3 + c) * height + y / s) * width + x / s];
          out[(((gsize) b * 3 + c) * height * s + y) * width * s + x] =
              v * 2.0f - 0.25f + 0.01f * (x % s) + 0.02f * (y % s);
        }
  return TRUE;
}

static float *
make_image (int w, int h, guint32 seed)
{
  GRand *r = g_rand_new_with_seed (seed);
  float *img = g_new (float, (gsize) 3 * w * h);
  gsize i;

  for (i = 0; i < (gsize) 3 * w * h; i++)
    img[i] = (float) g_rand_double (r);
  g_rand_free (r);
  return img;
}

static double
max_abs_diff (const float *a, const float *b, gsize n)
{
  double m = 0.0;
  gsize i;

  for (i = 0; i < n; i++)
    m = MAX (m, fabs ((double) a[i] - b[i]));
  return m;
}

/* PSNR with peak 1.0; clamp: compare what a viewer sees (outputs clamped
 * to [0, 1]) rather than the raw network output. */
static double
psnr (const float *a, const float *b, gsize n, gboolean clamp)
{
  double se = 0.0;
  gsize i;

  for (i = 0; i < n; i++) {
    double x = a[i], y = b[i], d;
    if (clamp) {
      x = CLAMP (x, 0.0, 1.0);
      y = CLAMP (y, 0.0, 1.0);
    }
    d = x - y;
    se += d * d;
  }
  if (se == 0.0)
    return 200.0;
  return 10.0 * log10 ((double) n / se);
}

static void
check_fake (int w, int h, int scale, int ws, int tile, int overlap,
    int blend, int batch)
{
  FakeNet net = { scale, 0, 0, 0, 0 };
  EhatTileOptions opt = { tile, overlap, batch, blend, 0, 1 };
  EhatTileStats st;
  float *in = make_image (w, h, w * 1000 + h);
  gsize n_out = (gsize) 3 * w * h * scale * scale;
  float *whole = g_new (float, n_out), *tiled = g_new (float, n_out);
  GError *err = NULL;

  g_assert_true (fake_process (&net, in, 1, w, h, whole, NULL));
  net.calls = 0;
  g_assert_true (ehat_upscale_tiled_custom (fake_process, &net, scale, ws,
          in, w, h, tiled, &opt, &st, &err));
  g_assert_no_error (err);
  g_assert_cmpfloat (max_abs_diff (whole, tiled, n_out), <, 2e-6);
  g_assert_cmpint (st.n_tiles, ==, st.tiles_x * st.tiles_y);
  g_assert_cmpint (st.n_batches, ==, net.calls);
  if (batch > 0)
    g_assert_cmpint (net.max_n, <=, batch);
  g_assert_cmpint (st.tile_width, <=, w);
  g_assert_cmpint (st.tile_height, <=, h);
  /* tiles are multiples of the window size unless they span the frame */
  if (st.tile_width != w)
    g_assert_cmpint (st.tile_width % ws, ==, 0);
  if (st.tile_height != h)
    g_assert_cmpint (st.tile_height % ws, ==, 0);
  g_free (in);
  g_free (whole);
  g_free (tiled);
}

static void
test_fake_sizes (void)
{
  static const int sizes[][2] = {
    {1, 1}, {1, 7}, {7, 1}, {1, 200}, {200, 1}, {5, 3}, {63, 64},
    {64, 64}, {65, 64}, {100, 37}, {129, 131}, {200, 120}, {17, 300},
  };
  guint i;
  int s;

  for (s = 2; s <= 4; s++)
    for (i = 0; i < G_N_ELEMENTS (sizes); i++) {
      check_fake (sizes[i][0], sizes[i][1], s, 8, 64, 16, -1, 0);
      check_fake (sizes[i][0], sizes[i][1], s, 8, 32, 8, 0, 3);
      check_fake (sizes[i][0], sizes[i][1], s, 8, 16, 8, 4, 1);
      check_fake (sizes[i][0], sizes[i][1], s, 8, 24, 0, -1, 2);
      /* tile size rounded up to the window (20 → 24) */
      check_fake (sizes[i][0], sizes[i][1], s, 8, 20, 6, 100, 0);
      /* automatic */
      check_fake (sizes[i][0], sizes[i][1], s, 8, 0, 16, -1, 0);
    }
}

/* The self-ensemble through the tiler.  fake_process is equivariant in the
 * pixel values (nearest neighbour) but not in its sub-pixel terms
 * 0.01·(x mod s) + 0.02·(y mod s): mirrored, x mod s becomes s−1−(x mod s),
 * so the mean over the transforms is known in closed form.  That checks
 * every forward transform against its inverse, on tiles, non-square
 * (transposed) tiles and whole frames. */
static void
check_ensemble (int w, int h, int scale, int tile, int n_transforms)
{
  FakeNet net = { scale, 0, 0, 0, 0 };
  EhatTileOptions opt = { tile, 8, 0, -1, 0, n_transforms };
  EhatTileStats st;
  float *in = make_image (w, h, 7 * w + h);
  int ow = w * scale, oh = h * scale;
  float *out = g_new (float, (gsize) 3 * ow * oh);
  double half = (scale - 1) / 2.0, worst = 0.0;
  GError *err = NULL;

  g_assert_true (ehat_upscale_tiled_custom (fake_process, &net, scale, 8,
          in, w, h, out, &opt, &st, &err));
  g_assert_no_error (err);
  g_assert_cmpint (net.calls, ==, n_transforms * st.n_batches);
  for (int c = 0; c < 3; c++)
    for (int y = 0; y < oh; y++)
      for (int x = 0; x < ow; x++) {
        double v = in[((gsize) c * h + y / scale) * w + x / scale];
        double sub = n_transforms == 2 ? 0.01 * half + 0.02 * (y % scale)
            : 0.03 * half;
        double got = out[((gsize) c * oh + y) * ow + x];

        worst = MAX (worst, fabs (got - (2.0 * v - 0.25 + sub)));
      }
  g_assert_cmpfloat (worst, <, 2e-6);
  g_free (in);
  g_free (out);
}

static void
test_ensemble (void)
{
  static const int sizes[][2] = {
    {1, 1}, {5, 3}, {64, 64}, {100, 37}, {37, 100}, {129, 131},
  };
  static const int bad[] = { -1, 3, 5, 16 };
  float img[6] = { 1, 2, 3, 4, 5, 6 }, t[6], back[6];
  FakeNet net = { 2, 0, 0, 0, 0 };
  EhatTileOptions opt = EHAT_TILE_OPTIONS_INIT;
  float out[24];
  GError *err = NULL;

  for (int s = 2; s <= 3; s++)
    for (guint i = 0; i < G_N_ELEMENTS (sizes); i++)
      for (int n = 2; n <= 8; n *= 2) {
        check_ensemble (sizes[i][0], sizes[i][1], s, 32, n);
        check_ensemble (sizes[i][0], sizes[i][1], s, 0, n);
      }

  /* a 3×2 image: transform 4 is the plain transpose, and every transform
   * followed by its inverse gives the image back */
  ehat_dihedral (img, 1, 3, 2, 4, t, FALSE);
  for (int y = 0; y < 3; y++)
    for (int x = 0; x < 2; x++)
      g_assert_cmpfloat (t[y * 2 + x], ==, img[x * 3 + y]);
  for (int k = 0; k < 8; k++) {
    memset (back, 0, sizeof back);
    ehat_dihedral (img, 1, 3, 2, k, t, FALSE);
    ehat_dihedral (t, 1, 3, 2, k, back, TRUE);
    g_assert_cmpmem (back, sizeof back, img, sizeof img);
  }

  for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
    opt.ensemble = bad[i];
    g_assert_false (ehat_upscale_tiled_custom (fake_process, &net, 2, 8, img,
            1, 2, out, &opt, NULL, &err));
    g_assert_error (err, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT);
    g_clear_error (&err);
  }
  g_assert_cmpint (net.calls, ==, 0);

  /* the batch function refuses what it cannot size, before any call */
  {
    EhatEnsemble e = { fake_process, &net, 8, 2 };
    static const int dims[][3] = { {0, 4, 4}, {1, 0, 4}, {1, 4, -1},
    {1, G_MAXINT / 2 + 1, 1}, {G_MAXINT, G_MAXINT, G_MAXINT}
    };

    for (guint i = 0; i < G_N_ELEMENTS (dims); i++) {
      g_assert_false (ehat_ensemble_process (&e, img, dims[i][0], dims[i][1],
              dims[i][2], out, &err));
      g_assert_error (err, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT);
      g_clear_error (&err);
    }
    g_assert_false (ehat_engine_process_ensemble (NULL, img, 1, 1, 2, 8, out,
            &err));
    g_assert_error (err, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT);
    g_clear_error (&err);
    g_assert_cmpint (net.calls, ==, 0);
  }
}

static void
test_whole_frame_when_small (void)
{
  FakeNet net = { 2, 0, 0, 0, 0 };
  EhatTileOptions opt = { 64, 16, 0, -1, 0, 1 };
  EhatTileStats st;
  float *in = make_image (50, 33, 1), *out = g_new (float, 3 * 100 * 66);

  g_assert_true (ehat_upscale_tiled_custom (fake_process, &net, 2, 8, in, 50,
          33, out, &opt, &st, NULL));
  g_assert_cmpint (net.calls, ==, 1);
  g_assert_cmpint (net.last_w, ==, 50);
  g_assert_cmpint (net.last_h, ==, 33);
  g_assert_cmpint (st.n_tiles, ==, 1);

  /* auto: whole frame up to 512×512 */
  opt.tile_size = 0;
  net.calls = 0;
  g_assert_true (ehat_upscale_tiled_custom (fake_process, &net, 2, 8, in, 50,
          33, out, &opt, &st, NULL));
  g_assert_cmpint (net.calls, ==, 1);
  g_assert_cmpint (ehat_tile_auto_size (512, 512), ==, 0);
  g_assert_cmpint (ehat_tile_auto_size (1920, 1080), ==, 256);
  g_free (in);
  g_free (out);
}

static void
test_layout_weights (void)
{
  int length, tile, overlap, blend, scale, ws = 8;

  for (length = 1; length <= 300; length += 7)
    for (tile = 8; tile <= 64; tile += 8)
      for (overlap = 0; overlap <= tile - ws; overlap += 5)
        for (blend = -1; blend <= overlap + 2; blend += 3)
          for (scale = 2; scale <= 4; scale++) {
            int origins[400], n, i, t = MIN (tile, length), p;
            float *w, *sum;

            n = ehat_tile_layout_1d (length, tile, overlap, blend, ws, scale,
                NULL, 0, NULL);
            g_assert_cmpint (n, >=, 1);
            w = g_new (float, (gsize) n * t * scale);
            sum = g_new0 (float, (length + ws) * scale);
            g_assert_cmpint (ehat_tile_layout_1d (length, tile, overlap,
                    blend, ws, scale, origins, 400, w), ==, n);
            g_assert_cmpint (origins[0], ==, 0);
            if (n == 1) {
              g_assert_cmpint (t, ==, length);
            } else {
              /* on the window grid, ending where the reference pads to */
              g_assert_cmpint (origins[n - 1] + t, ==,
                  (length + ws - 1) / ws * ws);
              g_assert_cmpint (origins[n - 1], <, length);
            }
            for (i = 0; i < n; i++)
              g_assert_cmpint (origins[i] % ws, ==, 0);
            for (i = 0; i + 1 < n; i++) {
              /* neighbours overlap by at least the requested amount */
              g_assert_cmpint (origins[i] + t - origins[i + 1], >=, overlap);
              g_assert_cmpint (origins[i + 1], >, origins[i]);
            }
            for (i = 0; i < n; i++)
              for (p = 0; p < t * scale; p++) {
                float v = w[(gsize) i * t * scale + p];
                g_assert_cmpfloat (v, >=, 0.0f);
                g_assert_cmpfloat (v, <=, 1.0f);
                sum[origins[i] * scale + p] += v;
              }
            /* frame borders: weight 1, no ramp */
            g_assert_cmpfloat (w[0], ==, 1.0f);
            g_assert_cmpfloat (w[(gsize) n * t * scale - 1], ==, 1.0f);
            for (p = 0; p < length * scale; p++)
              g_assert_cmpfloat (fabs (sum[p] - 1.0f), <, 1e-6);
            g_free (w);
            g_free (sum);
          }
  /* invalid: overlap leaves no whole window to step by */
  g_assert_cmpint (ehat_tile_layout_1d (100, 16, 9, -1, 8, 2, NULL, 0, NULL),
      ==, 0);
}

static void
test_invalid (void)
{
  FakeNet net = { 2, 0, 0, 0, 0 };
  EhatTileOptions opt = { 16, 16, 0, -1, 0, 1 };
  float *in = make_image (40, 40, 2), *out = g_new (float, 3 * 80 * 80);
  GError *err = NULL;

  /* overlap ≥ tile */
  g_assert_false (ehat_upscale_tiled_custom (fake_process, &net, 2, 8, in,
          40, 40, out, &opt, NULL, &err));
  g_assert_error (err, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT);
  g_clear_error (&err);
  opt.overlap = -1;
  g_assert_false (ehat_upscale_tiled_custom (fake_process, &net, 2, 8, in,
          40, 40, out, &opt, NULL, &err));
  g_assert_error (err, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT);
  g_clear_error (&err);
  opt.overlap = 4;
  opt.tile_size = -8;
  g_assert_false (ehat_upscale_tiled_custom (fake_process, &net, 2, 8, in,
          40, 40, out, &opt, NULL, &err));
  g_clear_error (&err);
  opt.tile_size = 16;
  g_assert_false (ehat_upscale_tiled_custom (fake_process, &net, 2, 8, in,
          0, 40, out, &opt, NULL, &err));
  g_clear_error (&err);
  g_assert_false (ehat_upscale_tiled_custom (fake_process, &net, 2, 8, NULL,
          40, 40, out, &opt, NULL, &err));
  g_clear_error (&err);
  g_assert_false (ehat_upscale_tiled (NULL, in, 40, 40, out, &opt, NULL,
          &err));
  g_assert_error (err, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT);
  g_clear_error (&err);
  g_free (in);
  g_free (out);
}

/* An engine that runs out of memory above a tile size: the tiler shrinks
 * the tile and retries. */
static gboolean
oom_process (gpointer user_data, const float *in, int n, int width,
    int height, float *out, GError **error)
{
  if (width * height * n > 32 * 32) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY, "fake OOM");
    return FALSE;
  }
  return fake_process (user_data, in, n, width, height, out, error);
}

static void
test_oom_error_passes_through (void)
{
  FakeNet net = { 2, 0, 0, 0, 0 };
  EhatTileOptions opt = { 64, 8, 0, -1, 0, 1 };
  float *in = make_image (100, 100, 3), *out = g_new (float, 3 * 200 * 200);
  GError *err = NULL;

  /* the custom entry point reports the error; only ehat_upscale_tiled
   * (which knows the engine) retries */
  g_assert_false (ehat_upscale_tiled_custom (oom_process, &net, 2, 8, in,
          100, 100, out, &opt, NULL, &err));
  g_assert_error (err, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY);
  g_clear_error (&err);
  g_free (in);
  g_free (out);
}

/* ---- the real network with the golden random-weight models ------------ */

static char *
golden_model (const char *name)
{
  const char *dir = g_getenv ("EHAT_GOLDEN_DIR");
  char *path;

  if (!dir)
    return NULL;
  path = g_build_filename (dir, name, "model.safetensors", NULL);
  if (!g_file_test (path, G_FILE_TEST_EXISTS)) {
    g_free (path);
    return NULL;
  }
  return path;
}

static float *
load_image (const char *rel, int *w, int *h)
{
  const char *dir = g_getenv ("EHAT_SHARED_DATA");
  char *path;
  guint8 *rgb = NULL;
  float *img;
  GError *err = NULL;

  if (!dir)
    return NULL;
  path = g_build_filename (dir, rel, NULL);
  if (!ehat_png_read (path, &rgb, w, h, &err)) {
    g_test_message ("%s: %s", path, err->message);
    g_clear_error (&err);
    g_free (path);
    return NULL;
  }
  g_free (path);
  img = ehat_rgb8_to_planar (rgb, *w, *h);
  g_free (rgb);
  return img;
}

/* Tiled (tile 64, the default overlap and blend) against whole-frame
 * output of the model at `path` on real images, raw PSNR ≥ min_db. */
static void
check_tiled_psnr (const char *name, const char *path, double min_db)
{
  static const char *images[] = {
    "eval/Set5/LR_bicubic/X2/butterflyx2.png",
    "eval/Set5/LR_bicubic/X2/womanx2.png",
  };
  EhatModel *model;
  EhatEngine *engine;
  EhatEngineOptions eo = EHAT_ENGINE_OPTIONS_INIT;
  GError *err = NULL;
  guint i;

  model = ehat_model_load (path, &err);
  g_assert_no_error (err);
  eo.backend = EHAT_BACKEND_CPU;
  engine = ehat_engine_new (model, &eo, &err);
  g_assert_no_error (err);

  for (i = 0; i < G_N_ELEMENTS (images); i++) {
    int w, h, s = ehat_model_get_config (model)->upscale;
    float *in = load_image (images[i], &w, &h), *whole, *tiled;
    EhatTileOptions opt = EHAT_TILE_OPTIONS_INIT;
    EhatTileStats st;
    gsize n;
    double p_raw, p_clamped;

    if (!in) {
      g_test_fail_printf ("test image missing (EHAT_SHARED_DATA=%s)", g_getenv ("EHAT_SHARED_DATA"));
      break;
    }
    opt.tile_size = 64;
    n = (gsize) 3 * w * h * s * s;
    whole = g_new (float, n);
    tiled = g_new (float, n);
    g_assert_true (ehat_engine_process (engine, in, 1, w, h, whole, &err));
    g_assert_no_error (err);
    g_assert_true (ehat_upscale_tiled (engine, in, w, h, tiled, &opt, &st,
            &err));
    g_assert_no_error (err);
    g_assert_cmpint (st.n_tiles, >, 1);
    p_raw = psnr (whole, tiled, n, FALSE);
    p_clamped = psnr (whole, tiled, n, TRUE);
    g_test_message ("%s %s %dx%d x%d: %d tiles, PSNR tiled vs whole: "
        "raw %.2f dB, clamped %.2f dB", name, images[i], w, h, s,
        st.n_tiles, p_raw, p_clamped);
    g_assert_cmpfloat (p_raw, >=, min_db);
    g_free (in);
    g_free (whole);
    g_free (tiled);
  }
  ehat_engine_free (engine);
  ehat_model_unref (model);
}

/* The random-weight golden models are the worst case (chaotic receptive
 * field): ≥ 38 dB. */
static void
test_golden_psnr (gconstpointer data)
{
  const char *name = data;
  g_autofree char *path = golden_model (name);

  if (!path) {
    g_test_fail_printf ("golden model missing (EHAT_GOLDEN_DIR=%s)",
        g_getenv ("EHAT_GOLDEN_DIR"));
    return;
  }
  check_tiled_psnr (name, path, 38.0);
}

/* The shipped trained models at the default overlap: ≥ 45 dB. */
static void
test_shipped_psnr (gconstpointer data)
{
  const char *name = data;
  const char *dir = g_getenv ("EHAT_MODELS_DIR");
  g_autofree char *file = g_strconcat (name, ".safetensors", NULL);
  g_autofree char *path = dir ? g_build_filename (dir, file, NULL) : NULL;

  if (!path || !g_file_test (path, G_FILE_TEST_EXISTS)) {
    g_test_fail_printf ("shipped model missing (EHAT_MODELS_DIR=%s)", dir);
    return;
  }
  check_tiled_psnr (name, path, 45.0);
}

/* Tiny and odd frames through the real network: tiling must give exactly
 * the whole-frame result when the frame fits one tile, and a sane output
 * otherwise. */
static void
test_golden_small (void)
{
  static const int sizes[][2] = { {1, 1}, {1, 9}, {9, 1}, {7, 5}, {13, 70},
    {70, 13}
  };
  char *path = golden_model ("hat-tiny-x2");
  EhatModel *model;
  EhatEngine *engine;
  EhatEngineOptions eo = EHAT_ENGINE_OPTIONS_INIT;
  GError *err = NULL;
  guint i;

  if (!path) {
    g_test_fail_printf ("golden model missing (EHAT_GOLDEN_DIR=%s)", g_getenv ("EHAT_GOLDEN_DIR"));
    return;
  }
  model = ehat_model_load (path, &err);
  g_assert_no_error (err);
  eo.backend = EHAT_BACKEND_CPU;
  engine = ehat_engine_new (model, &eo, &err);
  g_assert_no_error (err);

  for (i = 0; i < G_N_ELEMENTS (sizes); i++) {
    int w = sizes[i][0], h = sizes[i][1];
    float *in = make_image (w, h, i);
    gsize n = (gsize) 3 * w * h * 4;
    float *whole = g_new (float, n), *tiled = g_new (float, n);
    EhatTileOptions opt = { 32, 8, 0, -1, 0, 1 };
    gsize k;

    g_assert_true (ehat_engine_process (engine, in, 1, w, h, whole, &err));
    g_assert_no_error (err);
    g_assert_true (ehat_upscale_tiled (engine, in, w, h, tiled, &opt, NULL,
            &err));
    g_assert_no_error (err);
    for (k = 0; k < n; k++)
      g_assert_true (isfinite (tiled[k]));
    if (w <= 32 && h <= 32)
      g_assert_cmpfloat (max_abs_diff (whole, tiled, n), ==, 0.0);
    g_free (in);
    g_free (whole);
    g_free (tiled);
  }
  ehat_engine_free (engine);
  ehat_model_unref (model);
  g_free (path);
}

/* The workspace estimate is the arena the network then allocates, and the
 * automatic tile size follows the memory budget. */
static void
test_auto_size_from_memory (void)
{
  char *path = golden_model ("hat-tiny-x2");
  EhatModel *model;
  EhatEngine *engine;
  EhatEngineOptions eo = EHAT_ENGINE_OPTIONS_INIT;
  GError *err = NULL;
  int w = 40, h = 24, ws = 8, t, th;
  float *in, *out;
  gsize whole, per_tile, budget;

  if (!path) {
    g_test_fail_printf ("golden model missing (EHAT_GOLDEN_DIR=%s)", g_getenv ("EHAT_GOLDEN_DIR"));
    return;
  }
  model = ehat_model_load (path, &err);
  g_assert_no_error (err);
  eo.backend = EHAT_BACKEND_CPU;
  engine = ehat_engine_new (model, &eo, &err);
  g_assert_no_error (err);

  /* estimate == what a forward pass then holds (sizes padded to 8) */
  in = make_image (w, h, 1);
  out = g_new (float, (gsize) 3 * w * h * 4);
  g_assert_true (ehat_engine_process (engine, in, 1, w, h, out, &err));
  g_assert_no_error (err);
  whole = ehat_engine_estimate_bytes (engine, 1, w, h);
  g_assert_cmpuint (whole, ==, ehat_engine_get_peak_workspace (engine));
  g_assert_cmpuint (ehat_engine_estimate_bytes (engine, 1, 33, 17), ==,
      ehat_engine_estimate_bytes (engine, 1, 40, 24));
  g_assert_cmpuint (ehat_engine_estimate_bytes (engine, 2, w, h), >, whole);
  g_assert_cmpuint (ehat_engine_estimate_bytes (engine, 0, w, h), ==, 0);

  /* a budget the whole frame fits in: no tiling */
  ehat_tile_auto_size_for_engine (engine, w, h, 16, 0, (gsize) 1 << 30, &t,
      &th);
  g_assert_cmpint (t, ==, 0);
  g_assert_cmpint (th, ==, 0);
  /* none at all: the smallest legal tile (overlap + 2 windows) */
  ehat_tile_auto_size_for_engine (engine, 2000, 2000, 16, 1, 1, &t, &th);
  g_assert_cmpint (t, ==, 32);
  g_assert_cmpint (th, ==, 32);
  /* in between: tiles whose batch fits */
  per_tile = ehat_engine_estimate_bytes (engine, 2, 128, 128)
      + (gsize) 2 * 3 * 128 * 128 * 5 * sizeof (float);
  budget = per_tile + 1000;
  ehat_tile_auto_size_for_engine (engine, 2000, 2000, 16, 2, budget, &t, &th);
  g_assert_cmpint (t % ws, ==, 0);
  g_assert_cmpint (th % ws, ==, 0);
  g_assert_cmpint (t * th, >=, 96 * 96);
  g_assert_cmpuint (ehat_engine_estimate_bytes (engine, 2, t, th)
      + (gsize) 2 * 3 * t * th * 5 * sizeof (float), <=, budget);
  /* a wide frame whose half fits: two tiles as high as the frame, not
   * eight squares */
  budget = ehat_engine_estimate_bytes (engine, 1, 976, 1080)
      + (gsize) 3 * 976 * 1080 * 5 * sizeof (float);
  ehat_tile_auto_size_for_engine (engine, 1920, 1080, 16, 1, budget, &t,
      &th);
  g_assert_cmpint (th, ==, 1080);
  g_assert_cmpint (t, >=, 968);
  g_assert_cmpint (t, <=, 976);
  /* and the tiler runs that geometry (whole frame of 1 row) */
  /* memory for everything: the whole frame */
  ehat_tile_auto_size_for_engine (engine, 1920, 1080, 16, 1,
      (gsize) 64 << 30, &t, &th);
  g_assert_cmpint (t, ==, 0);
  /* frames too large for one pass get tiles even with memory to spare */
  ehat_tile_auto_size_for_engine (engine, 40000, 30, 16, 1, G_MAXSIZE / 2,
      &t, &th);
  g_assert_cmpint (t, >, 0);
  g_assert_cmpint (t * 2, <=, 65536);
  g_assert_cmpint (th, ==, 30);

  /* rectangular tiles through the tiler: same result as square ones of
   * the same grid where the frame is one tile high */
  {
    float *a = g_new (float, (gsize) 3 * w * h * 4);
    EhatTileOptions o1 = { 16, 8, 0, -1, 0, 1 }, o2 = { 16, 8, 0, -1, 24, 1 };
    EhatTileStats st;

    g_assert_true (ehat_upscale_tiled (engine, in, w, h, a, &o2, &st, &err));
    g_assert_no_error (err);
    g_assert_cmpint (st.tile_width, ==, 16);
    g_assert_cmpint (st.tile_height, ==, 24);
    g_assert_cmpint (st.tiles_y, ==, 1);
    o1.tile_size = 16;
    o1.tile_height = 0;
    g_assert_true (ehat_upscale_tiled (engine, in, w, h, out, &o1, &st,
            &err));
    g_assert_cmpint (st.tiles_y, >, 1);
    g_free (a);
  }

  /* the environment overrides the budget */
  g_setenv ("EHAT_MEMORY_BUDGET_MB", "3", TRUE);
  g_assert_cmpuint (ehat_tile_auto_budget (), ==, (gsize) 3 << 20);
  g_unsetenv ("EHAT_MEMORY_BUDGET_MB");
  budget = ehat_tile_auto_budget ();
  g_assert_cmpuint (budget, >, 0);
  g_assert_cmpuint (budget, <=, (gsize) 2 << 30);

  g_free (in);
  g_free (out);
  ehat_engine_free (engine);
  ehat_model_unref (model);
  g_free (path);
}

/* A model with an absolute position embedding (tests/golden/ehat-ape-x2:
 * 32×32 tokens, window 8, ×2) runs any pass at the embedding's size, so
 * a larger frame is tiled at that size, automatically and when a larger
 * tile was asked for, and each tile is the network's pass on its pixels. */
static void
test_ape_tiles (void)
{
  const char *dir = g_getenv ("EHAT_PROJECT_GOLDEN_DIR");
  g_autofree char *path = NULL;
  g_autoptr (GError) err = NULL;
  g_autoptr (EhatModel) model = NULL;
  g_autoptr (EhatEngine) engine = NULL;
  EhatEngineOptions eo = EHAT_ENGINE_OPTIONS_INIT;
  EhatTileOptions o = EHAT_TILE_OPTIONS_INIT;
  EhatTileStats st;
  const int w = 70, h = 45, S = 32;
  g_autofree float *in = make_image (w, h, 7);
  g_autofree float *out = g_new (float, (gsize) 3 * w * h * 4);
  g_autofree float *out2 = g_new (float, (gsize) 3 * w * h * 4);
  g_autofree float *crop = g_new (float, (gsize) 3 * S * S);
  g_autofree float *first = g_new (float, (gsize) 3 * S * S * 4);
  int ox[8], oy[8], tw, th;
  double worst = 0;

  g_assert_nonnull (dir);
  path = g_build_filename (dir, "ehat-ape-x2", "model.safetensors", NULL);
  model = ehat_model_load (path, &err);
  g_assert_no_error (err);
  g_assert_cmpint (ehat_model_get_config (model)->ape_size, ==, S);
  eo.backend = EHAT_BACKEND_CPU;
  eo.n_threads = 1;
  engine = ehat_engine_new (model, &eo, &err);
  g_assert_no_error (err);

  /* the automatic geometry: the whole frame when it fits in 32×32 (any
   * budget), else 32×32 tiles whatever the budget */
  ehat_tile_auto_size_for_engine (engine, 30, 20, 16, 0, 1, &tw, &th);
  g_assert_cmpint (tw, ==, 0);
  g_assert_cmpint (th, ==, 0);
  ehat_tile_auto_size_for_engine (engine, w, h, 16, 0, G_MAXSIZE / 2, &tw,
      &th);
  g_assert_cmpint (tw, ==, S);
  g_assert_cmpint (th, ==, S);
  ehat_tile_auto_size_for_engine (engine, 20, 40, 16, 0, 0, &tw, &th);
  g_assert_cmpint (tw, ==, S);
  g_assert_cmpint (th, ==, S);

  g_assert_true (ehat_upscale_tiled (engine, in, w, h, out, &o, &st, &err));
  g_assert_no_error (err);
  g_assert_cmpint (st.tile_width, ==, S);
  g_assert_cmpint (st.tile_height, ==, S);
  g_assert_cmpint (st.tiles_x, ==, ehat_tile_layout_1d (w, S, 16, -1, 8, 2,
          ox, G_N_ELEMENTS (ox), NULL));
  g_assert_cmpint (st.tiles_y, ==, ehat_tile_layout_1d (h, S, 16, -1, 8, 2,
          oy, G_N_ELEMENTS (oy), NULL));
  g_assert_cmpint (st.tiles_x, >=, 3);
  g_assert_cmpint (st.tiles_y, >=, 2);

  /* where only the first tile reaches (left of the second column's
   * origin, above the second row's), the output is that tile's pass */
  for (int c = 0; c < 3; c++)
    for (int y = 0; y < S; y++)
      memcpy (crop + ((gsize) c * S + y) * S,
          in + ((gsize) c * h + y) * w, S * sizeof (float));
  g_assert_true (ehat_engine_process (engine, crop, 1, S, S, first, &err));
  g_assert_no_error (err);
  for (int c = 0; c < 3; c++)
    for (int y = 0; y < 2 * oy[1]; y++)
      for (int x = 0; x < 2 * ox[1]; x++)
        worst = MAX (worst, fabs (out[((gsize) c * 2 * h + y) * 2 * w + x]
                - first[((gsize) c * 2 * S + y) * 2 * S + x]));
  g_assert_cmpfloat (worst, <=, 1e-6);

  /* a larger tile than the embedding cannot run: it means 32×32 */
  o.tile_size = 64;
  g_assert_true (ehat_upscale_tiled (engine, in, w, h, out2, &o, &st, &err));
  g_assert_no_error (err);
  g_assert_cmpint (st.tile_width, ==, S);
  g_assert_cmpint (st.tile_height, ==, S);
  g_assert_cmpint (memcmp (out, out2, (gsize) 3 * w * h * 4
          * sizeof (float)), ==, 0);

  /* the engine alone refuses a pass larger than the embedding */
  g_assert_false (ehat_engine_process (engine, in, 1, w, h, out, &err));
  g_assert_error (err, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT);
}

int
main (int argc, char **argv)
{
  static const char *cases[] = { "hat-tiny-x2", "ehat-tiny-x2",
    "hat-small-x3", "hat-small-x4", "ehat-small-x4"
  };
  guint i;

  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/tiler/layout-weights", test_layout_weights);
  g_test_add_func ("/tiler/fake-sizes", test_fake_sizes);
  g_test_add_func ("/tiler/whole-frame-when-small",
      test_whole_frame_when_small);
  g_test_add_func ("/tiler/invalid", test_invalid);
  g_test_add_func ("/tiler/ensemble", test_ensemble);
  g_test_add_func ("/tiler/oom-error", test_oom_error_passes_through);
  g_test_add_func ("/tiler/golden/small", test_golden_small);
  g_test_add_func ("/tiler/ape-tiles", test_ape_tiles);
  g_test_add_func ("/tiler/auto-size-from-memory",
      test_auto_size_from_memory);
  for (i = 0; i < G_N_ELEMENTS (cases); i++) {
    char *p = g_strdup_printf ("/tiler/golden/psnr/%s", cases[i]);
    g_test_add_data_func (p, cases[i], test_golden_psnr);
    g_free (p);
  }
  g_test_add_data_func ("/tiler/shipped/psnr/ehat-fast-x2", "ehat-fast-x2",
      test_shipped_psnr);
  g_test_add_data_func ("/tiler/shipped/psnr/ehat-fast-x4", "ehat-fast-x4",
      test_shipped_psnr);
  return g_test_run ();
}
