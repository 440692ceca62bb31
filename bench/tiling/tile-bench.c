/* Tile geometry benchmark (docs/tiling.md): time per frame and PSNR of the
 * tiled result against one whole-frame pass, on a real image cropped to
 * the requested LR size.
 *
 *   tile-bench MODEL IMAGE.png WxH REPEAT  T/O/B [T/O/B ...]
 *
 * T/O/B = tile size / overlap / blend band (-1 = default); T = 0 → whole
 * frame.  Build: see bench/tiling/README.md. */
#include "ehat.h"
#include "ehat-png.h"
#include "ehat-tiler.h"

#include <math.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

static double
psnr (const float *a, const float *b, gsize n)
{
  double se = 0.0;

  for (gsize i = 0; i < n; i++) {
    double x = CLAMP (a[i], 0.0f, 1.0f), y = CLAMP (b[i], 0.0f, 1.0f);
    se += (x - y) * (x - y);
  }
  return se == 0.0 ? INFINITY : 10.0 * log10 (n / se);
}

static double
cpu_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Best of `repeat` runs: wall time and process CPU time (on a shared,
 * loaded machine the CPU time is the stable measure of the work). */
static double
run (EhatEngine *e, const float *in, int w, int h, float *out,
    EhatTileOptions *o, int repeat, EhatTileStats *st, double *cpu)
{
  double best = INFINITY;
  GError *err = NULL;

  *cpu = INFINITY;
  for (int r = 0; r < repeat; r++) {
    gint64 t0 = g_get_monotonic_time ();
    double c0 = cpu_ms ();

    if (!ehat_upscale_tiled (e, in, w, h, out, o, st, &err)) {
      fprintf (stderr, "%s\n", err->message);
      exit (1);
    }
    best = MIN (best, (g_get_monotonic_time () - t0) / 1000.0);
    *cpu = MIN (*cpu, cpu_ms () - c0);
  }
  return best;
}

int
main (int argc, char **argv)
{
  GError *err = NULL;
  guint8 *rgb8;
  int iw, ih, w, h, repeat, s;
  float *img, *in, *ref, *out;
  EhatModel *m;
  EhatEngine *e;
  EhatEngineOptions eo = EHAT_ENGINE_OPTIONS_INIT;
  EhatTileOptions whole = EHAT_TILE_OPTIONS_INIT;
  EhatTileStats st;
  double t_whole, c_whole;
  int aw, ah;

  if (argc < 6 || sscanf (argv[3], "%dx%d", &w, &h) != 2) {
    fprintf (stderr, "usage: %s MODEL IMAGE WxH REPEAT T/O/B...\n", argv[0]);
    return 2;
  }
  repeat = atoi (argv[4]);
  if (!(m = ehat_model_load (argv[1], &err))
      || !ehat_png_read (argv[2], &rgb8, &iw, &ih, &err)) {
    fprintf (stderr, "%s\n", err->message);
    return 1;
  }
  eo.backend = EHAT_BACKEND_CPU;
  e = ehat_engine_new (m, &eo, &err);
  g_assert (e);
  s = ehat_model_get_config (m)->upscale;
  g_assert (iw >= w && ih >= h);
  img = ehat_rgb8_to_planar (rgb8, iw, ih);
  in = g_new (float, 3 * w * h);
  for (int c = 0; c < 3; c++)
    for (int y = 0; y < h; y++)
      memcpy (in + (c * h + y) * w, img + ((gsize) c * ih + y) * iw,
          w * sizeof (float));
  ref = g_new (float, 3 * w * h * s * s);
  out = g_new (float, 3 * w * h * s * s);

  whole.tile_size = MAX (w, h);
  t_whole = run (e, in, w, h, ref, &whole, repeat, &st, &c_whole);
  ehat_tile_auto_size_for_engine (e, w, h, 16, 1, 0, &aw, &ah);
  printf ("%s %dx%d whole: %.0f ms wall, %.0f ms CPU, workspace %.0f MiB, "
      "auto tiles %dx%d (budget %.0f MiB)\n", argv[1], w, h, t_whole,
      c_whole, ehat_engine_estimate_bytes (e, 1, w, h) / 1048576.0, aw, ah,
      ehat_tile_auto_budget () / 1048576.0);
  for (int i = 5; i < argc; i++) {
    EhatTileOptions o = EHAT_TILE_OPTIONS_INIT;
    double t, c;

    if (sscanf (argv[i], "%d/%d/%d", &o.tile_size, &o.overlap, &o.blend)
        != 3)
      return 2;
    t = run (e, in, w, h, out, &o, repeat, &st, &c);
    printf ("  tile %3d overlap %2d blend %2d: %3d tiles %6.0f ms wall "
        "(%+5.1f%%), %6.0f ms CPU (%+5.1f%%), PSNR %.2f dB, workspace "
        "%.0f MiB\n", o.tile_size, o.overlap, o.blend, st.n_tiles, t,
        100.0 * (t / t_whole - 1.0), c, 100.0 * (c / c_whole - 1.0),
        psnr (out, ref, (gsize) 3 * w * h * s * s),
        ehat_engine_estimate_bytes (e, 1, st.tile_width, st.tile_height)
        / 1048576.0);
  }
  return 0;
}
