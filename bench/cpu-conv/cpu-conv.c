/* The CPU backend's 3×3 convolution paths side by side, layer by layer:
 * im2col + GEMM (EHAT_CPU_CONV=im2col) against Winograd F(4×4, 3×3), on
 * the shapes of the shipped models and of HAT, best of --repeat runs
 * after one warm-up, in one process.  GFLOP/s counts the direct
 * convolution's 2·h·w·cin·cout·9 for both, so Winograd's is "effective".
 *
 *   build/bench/cpu-conv [--threads N] [--bf16] [--repeat R]
 *
 * --bf16: a precision=bf16 backend, whose im2col path multiplies in bf16
 * (Winograd stays fp32). */
#include "ehat-cpu.h"

#include <stdio.h>
#include <stdlib.h>

static double
conv_ms (EhatBackend *be, const EhatConvW *cw, const float *x, int h, int w,
    float *y, int shuffle, int repeat)
{
  double best = G_MAXDOUBLE;

  be->ops->conv (be, cw, x, 1, h, w, y, EHAT_ACT_NONE, NULL, 0.0f, shuffle);
  for (int r = 0; r < repeat; r++) {
    gint64 t0 = g_get_monotonic_time ();
    be->ops->conv (be, cw, x, 1, h, w, y, EHAT_ACT_NONE, NULL, 0.0f, shuffle);
    best = MIN (best, (g_get_monotonic_time () - t0) / 1e3);
  }
  return best;
}

int
main (int argc, char **argv)
{
  static const int shapes[][5] = {
    /* w, h, cin, cout, shuffle: ehat-fast-x2/x4 at 320×180 (CAB 48→16→48,
     * conv_after_body, conv_before_upsample, the ×2 upsampling; ×4's second
     * at 640×360), HAT at 64×64 (CAB 180→60→180, a group's 180→180),
     * HAT-S's 144→48 */
    {320, 180, 48, 16, 1}, {320, 180, 16, 48, 1}, {320, 180, 48, 48, 1},
    {320, 180, 48, 64, 1}, {320, 180, 64, 256, 2}, {640, 360, 64, 256, 2},
    {64, 64, 180, 60, 1}, {64, 64, 60, 180, 1}, {64, 64, 180, 180, 1},
    {128, 128, 144, 48, 1},
  };
  int threads = 1, repeat = 5;
  gboolean bf16 = FALSE;
  GOptionEntry entries[] = {
    {"threads", 't', 0, G_OPTION_ARG_INT, &threads, "CPU threads", "N"},
    {"bf16", 0, 0, G_OPTION_ARG_NONE, &bf16, "precision=bf16 backend", NULL},
    {"repeat", 'r', 0, G_OPTION_ARG_INT, &repeat, "timed runs", "R"},
    {NULL}
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("");
  g_autoptr (GError) error = NULL;
  EhatBackend *be;

  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &error) || threads < 1
      || repeat < 1) {
    g_printerr ("%s\n", error ? error->message : "bad --threads/--repeat");
    return 2;
  }
  if (bf16 && !ehat_cpu_has_bf16 ()) {
    g_printerr ("this CPU has no AVX512-BF16\n");
    return 2;
  }
  be = ehat_backend_cpu_new_full (threads, bf16, &error);
  if (!be) {
    g_printerr ("%s\n", error->message);
    return 1;
  }
  printf ("%-9s %-9s %-2s %14s %14s %7s\n", "LR size", "cin→cout", "s",
      "im2col ms", "Winograd ms", "ratio");
  for (guint si = 0; si < G_N_ELEMENTS (shapes); si++) {
    int w = shapes[si][0], h = shapes[si][1], cin = shapes[si][2];
    int cout = shapes[si][3], shuffle = shapes[si][4];
    gsize nx = (gsize) h * w * cin, nw = (gsize) cin * cout * 9;
    g_autofree float *x = g_new (float, nx);
    g_autofree float *y = g_new (float, (gsize) h * w * cout);
    g_autofree float *wt = g_new (float, nw);
    g_autofree float *b = g_new0 (float, cout);
    double ms[2], gflop = 2e-9 * h * w * cin * cout * 9;

    for (gsize i = 0; i < nx; i++)
      x[i] = (float) ((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    for (gsize i = 0; i < nw; i++)
      wt[i] = (float) ((i * 40503u) % 1000) / 10000.0f - 0.05f;
    for (int path = 0; path < 2; path++) {
      EhatConvW cw = { NULL, b, cin, cout, 3 };
      if (path == 0)
        g_setenv ("EHAT_CPU_CONV", "im2col", TRUE);
      else
        g_unsetenv ("EHAT_CPU_CONV");
      cw.w = be->ops->upload_conv (be, wt, cout, cin, 3, &error);
      if (!cw.w) {
        g_printerr ("%s\n", error->message);
        return 1;
      }
      ms[path] = conv_ms (be, &cw, x, h, w, y, shuffle, repeat);
      be->ops->free (be, cw.w);
    }
    printf ("%4dx%-4d %3d→%-4d %2d %7.2f (%4.0f) %7.2f (%4.0f) %6.2fx\n", w,
        h, cin, cout, shuffle, ms[0], gflop / ms[0] * 1e3, ms[1],
        gflop / ms[1] * 1e3, ms[0] / ms[1]);
  }
  be->ops->destroy (be);
  return 0;
}
