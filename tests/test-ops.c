/* Each CPU backend operation against a naive double-precision loop written
 * straight from EHAT-SPEC.md, on random shapes including odd sizes. */
#include "ehat-cpu.h"
#include "ehat-network.h"
#include "mlp-case.h"

#include <math.h>
#include <string.h>

static GRand *rng;
static EhatBackend *be;

static float *
rnd (gsize n, double scale)
{
  float *p = g_new (float, n);
  for (gsize i = 0; i < n; i++)
    p[i] = (float) g_rand_double_range (rng, -scale, scale);
  return p;
}

/* The largest error, which must be at most tol. */
static double
assert_close (const float *got, const double *want, gsize n, double tol)
{
  double m = 0.0;
  gsize at = 0;
  for (gsize i = 0; i < n; i++) {
    double d = fabs (got[i] - want[i]);
    if (!(d <= m)) {
      m = isnan (d) ? INFINITY : d;
      at = i;
    }
  }
  if (m > tol)
    g_error ("max abs error %.3g at %" G_GSIZE_FORMAT " (got %g want %g)", m,
        at, got[at], want[at]);
  return m;
}

static double
gelu_ref (double x)
{
  return 0.5 * x * (1.0 + erf (x / sqrt (2.0)));
}

static void
test_math (void)
{
  double worst_exp = 0.0, worst_gelu = 0.0;
  for (double x = -87.0; x <= 88.0; x += 0.01234) {
    float xf = (float) x;
    double e = exp ((double) xf);
    worst_exp = MAX (worst_exp, fabs (ehat_expf (xf) - e) / e);
  }
  for (double x = -10.0; x <= 10.0; x += 0.001) {
    float xf = (float) x;
    worst_gelu = MAX (worst_gelu, fabs (ehat_gelu (xf) - gelu_ref (xf)));
  }
  g_test_message ("exp rel err %.3g, gelu abs err %.3g", worst_exp,
      worst_gelu);
  g_assert_cmpfloat (worst_exp, <, 4e-7);
  g_assert_cmpfloat (worst_gelu, <, 1e-6);
  g_assert_cmpfloat (ehat_expf (-1000.0f), <, 1e-37);
  g_assert_cmpfloat (ehat_gelu (-30.0f), ==, 0.0f);
  g_assert_cmpfloat (ehat_gelu (30.0f), ==, 30.0f);
}

/* One convolution path (wino: Winograd where it suits, else im2col forced
 * by EHAT_CPU_CONV) of backend b on random shapes and every epilogue. */
static void
check_conv (EhatBackend *b, gboolean wino)
{
  static const int shapes[][5] = {
    /* n, h, w, cin, cout */
    {1, 5, 7, 3, 9}, {2, 8, 3, 13, 4}, {1, 1, 1, 5, 6}, {3, 9, 11, 6, 16},
    {1, 33, 2, 64, 12},
    /* the direct narrow kernels (up to 8 out): the last convolution's 3
     * (over 64 channels, and a tail of channels), 1 and 8 out, rows that
     * are not multiples of their pixel blocks */
    {1, 6, 10, 64, 3}, {2, 5, 9, 20, 3}, {1, 3, 11, 9, 1}, {1, 4, 5, 12, 8},
    {1, 2, 9, 7, 2}, {1, 3, 7, 10, 5}, {1, 2, 5, 16, 7},
    /* Winograd's: 16 channels and more in, more than 8 out, sizes that
     * are not multiples of its 4×4 tiles, a 1×1 image, shuffles of 2 and
     * 3 (outputs 24 and 36) */
    {2, 9, 11, 16, 16}, {1, 13, 6, 48, 24}, {1, 7, 5, 20, 36},
    {1, 1, 1, 16, 16}, {1, 2, 3, 17, 9}, {1, 23, 37, 64, 72},
  };
  for (guint si = 0; si < G_N_ELEMENTS (shapes); si++) {
    for (int variant = 0; variant < 4; variant++) {
      int n = shapes[si][0], h = shapes[si][1], w = shapes[si][2];
      int cin = shapes[si][3], cout = shapes[si][4];
      int shuffle = variant != 3 ? 1 : cout % 9 == 0 ? 3 : cout % 4 == 0
          ? 2 : 1, ss = shuffle * shuffle;
      EhatAct act = variant == 1 ? EHAT_ACT_GELU : variant == 2
          ? EHAT_ACT_LRELU : EHAT_ACT_NONE;
      gsize outs = (gsize) n * h * w * cout;
      g_autofree float *x = rnd ((gsize) n * h * w * cin, 1.0);
      g_autofree float *wt = rnd ((gsize) cout * cin * 9, 0.5);
      g_autofree float *res = rnd (outs, 1.0);
      g_autofree float *y = g_new (float, outs);
      g_autofree double *ref = g_new (double, outs);
      EhatConvW cw = { NULL, rnd (cout, 0.5), cin, cout, 3 };
      float alpha = variant == 0 ? 0.7f : 0.0f;
      int co = cout / ss;
      double scale = 1.0, err;
      gboolean is_wino;

      cw.w = b->ops->upload_conv (b, wt, cout, cin, 3, NULL);
      /* the path asked for is the one taken */
      is_wino = ((const EhatGemmB *) cw.w)->kind == EHAT_GEMM_WINOGRAD;
      g_assert_cmpint (is_wino, ==, wino && ehat_winograd_suits (3, cin,
              cout));
      if (variant == 0) {
        /* in-place residual: y starts as the residual */
        memcpy (y, res, outs * sizeof (float));
        b->ops->conv (b, &cw, x, n, h, w, y, act, y, alpha, shuffle);
      } else {
        b->ops->conv (b, &cw, x, n, h, w, y, act, NULL, 0.0f, shuffle);
      }
      for (int i = 0; i < n; i++)
        for (int yy = 0; yy < h; yy++)
          for (int xx = 0; xx < w; xx++)
            for (int o = 0; o < cout; o++) {
              double s = cw.b[o];
              gsize p = ((gsize) i * h + yy) * w + xx, dst;
              for (int ci = 0; ci < cin; ci++)
                for (int ky = 0; ky < 3; ky++)
                  for (int kx = 0; kx < 3; kx++) {
                    int sy = yy + ky - 1, sx = xx + kx - 1;
                    if (sy < 0 || sy >= h || sx < 0 || sx >= w)
                      continue;
                    s += (double) x[(((gsize) i * h + sy) * w + sx) * cin + ci]
                        * wt[((o * cin + ci) * 3 + ky) * 3 + kx];
                  }
              if (act == EHAT_ACT_GELU)
                s = gelu_ref (s);
              else if (act == EHAT_ACT_LRELU)
                s = s > 0 ? s : 0.01 * s;
              s += alpha * (double) res[p * cout + o];
              if (shuffle == 1) {
                dst = p * cout + o;
              } else {
                int c = o / ss, a = (o % ss) / shuffle, bb = o % shuffle;
                dst = ((((gsize) i * h * shuffle + yy * shuffle + a) * w
                        * shuffle) + xx * shuffle + bb) * co + c;
              }
              ref[dst] = s;
              scale = MAX (scale, fabs (s));
            }
      /* Winograd's transforms add rounding in proportion to the outputs'
       * size: measured up to 2.8·10⁻⁶ of the largest.  im2col's dot
       * products of 9·cin terms do too: 576 terms of outputs near 19
       * were 1.5·10⁻⁵ off on AVX-512, 2.1·10⁻⁵ on AVX2, 1·10⁻⁵ through
       * OpenBLAS (1.1·10⁻⁶ of the largest at most). */
      err = assert_close (y, ref, outs, is_wino ? 6e-6 * scale
          : MAX (2e-5, 1.5e-6 * scale));
      g_test_message ("%s %dx%dx%d %d->%d shuffle %d: max error %.2g of %.3g",
          is_wino ? "winograd" : ehat_gemm_is_narrow ((const EhatGemmB *)
              cw.w) ? "direct" : "im2col", n, h, w, cin, cout, shuffle, err,
          scale);
      b->ops->free (b, cw.w);
      g_free (cw.b);
    }
  }
}

/* check (b) on each set of kernels the CPU has: the backend's own
 * (AVX-512 here), the AVX2 ones (CPUs without AVX-512) and the portable
 * code with OpenBLAS (CPUs without AVX2, other architectures). */
static void
for_each_kernel_set (void (*check) (EhatBackend *b))
{
  for (int set = 0; set < 3; set++) {
    EhatBackend *b = be;
    if (set == 1 && !ehat_cpu_has_avx2 ())
      continue;
    if (set > 0) {
      g_setenv ("EHAT_CPU_NO_AVX512", "1", TRUE);
      if (set == 2)
        g_setenv ("EHAT_CPU_NO_AVX2", "1", TRUE);
      b = ehat_backend_cpu_new (2, NULL);
      g_unsetenv ("EHAT_CPU_NO_AVX512");
      g_unsetenv ("EHAT_CPU_NO_AVX2");
    }
    g_test_message ("kernels: %s", b->ops->describe (b));
    check (b);
    if (set > 0)
      b->ops->destroy (b);
  }
}

/* Both paths, with each GEMM. */
static void
check_conv_paths (EhatBackend *b)
{
  g_setenv ("EHAT_CPU_CONV", "im2col", TRUE);
  check_conv (b, FALSE);
  g_unsetenv ("EHAT_CPU_CONV");
  check_conv (b, TRUE);
}

static void
test_conv (void)
{
  for_each_kernel_set (check_conv_paths);
}

/* ref[r][o] = b[o] + Σk x[r][k]·w[o][k], in double */
static void
linear_ref (const float *x, const float *w, const float *b, int rows, int in,
    int out, double *ref)
{
  for (int r = 0; r < rows; r++)
    for (int o = 0; o < out; o++) {
      double s = b[o];
      for (int k = 0; k < in; k++)
        s += (double) x[r * in + k] * w[o * in + k];
      ref[r * out + o] = s;
    }
}

/* Widths that the packed GEMM splits into panels of 48, 32 (a 16-wide
 * tail becomes two of 32) and 16, against a double reference. */
static void
test_linear_panels (void)
{
  static const int outs[] = { 16, 60, 64, 100, 112, 256, 540 };
  int rows = 29, in = 40;

  for (guint i = 0; i < G_N_ELEMENTS (outs); i++) {
    int out = outs[i];
    g_autofree float *x = rnd ((gsize) rows * in, 1.0);
    g_autofree float *w = rnd ((gsize) out * in, 0.5);
    g_autofree float *b = rnd (out, 0.5);
    g_autofree float *y = g_new (float, (gsize) rows * out);
    g_autofree double *ref = g_new (double, (gsize) rows * out);
    EhatLinearW lw = { w, b, in, out, NULL };

    g_assert_true (be->ops->prepare_linear (be, &lw, NULL));
    be->ops->linear (be, &lw, x, rows, y, EHAT_ACT_NONE, 0.0f);
    linear_ref (x, w, b, rows, in, out, ref);
    assert_close (y, ref, (gsize) rows * out, 1e-5);
    be->ops->release_linear (be, &lw);
  }
}

/* ref[r][k] = LN(x)[r][k] in double, two passes (EHAT-SPEC.md: eps 1e-5,
 * biased variance). */
static void
layernorm_ref (const float *x, const EhatNormW *nw, int rows, int c,
    double *ref)
{
  for (int r = 0; r < rows; r++) {
    double mean = 0, var = 0;
    for (int k = 0; k < c; k++)
      mean += x[r * c + k];
    mean /= c;
    for (int k = 0; k < c; k++)
      var += (x[r * c + k] - mean) * (x[r * c + k] - mean);
    var /= c;
    for (int k = 0; k < c; k++)
      ref[r * c + k] = (x[r * c + k] - mean) / sqrt (var + 1e-5) * nw->w[k]
          + nw->b[k];
  }
}

/* norm_linear = LayerNorm fused into the GEMM's reading of A: against
 * double LN → linear → GELU, and bit for bit against the layernorm op
 * followed by the linear op (a network's output must not depend on the
 * backend fusing).  Packed weights (own kernels, the normalised block in
 * the thread's scratch; 600 rows cross the 512-row block) and W as it is
 * (OpenBLAS after a separate LayerNorm).  x has a large mean, which a
 * one-pass variance would get wrong. */
static void
test_norm_linear (void)
{
  static const int shapes[][3] = { {37, 19, 23}, {600, 40, 60},
    {70, 180, 360}, {5, 144, 17},
  };

  for (guint si = 0; si < G_N_ELEMENTS (shapes); si++) {
    MlpCase *mc = mlp_case_new (rng, shapes[si][0], shapes[si][1],
        shapes[si][2], 7.0);
    int rows = mc->rows, in = mc->in, out = mc->hid;
    gsize nx = (gsize) rows * in, ny = (gsize) rows * out;
    g_autofree float *y = g_new (float, ny), *y2 = g_new (float, ny);
    g_autofree float *n = g_new (float, nx);
    g_autofree double *ref = g_new (double, ny);

    for (int r = 0; r < rows; r++)
      mlp_case_hidden (mc, r, ref + (gsize) r * out, NULL);
    for (int v = 0; v < 2; v++) {
      if (v == 1)
        g_assert_true (be->ops->prepare_linear (be, &mc->fc1, NULL));
      be->ops->norm_linear (be, &mc->nw, &mc->fc1, mc->x, rows, y,
          EHAT_ACT_GELU);
      assert_close (y, ref, ny, 1e-4);
      be->ops->layernorm (be, &mc->nw, mc->x, rows, in, n);
      be->ops->linear (be, &mc->fc1, n, rows, y2, EHAT_ACT_GELU, 0.0f);
      g_assert_cmpmem (y, ny * sizeof (float), y2, ny * sizeof (float));
    }
    be->ops->release_linear (be, &mc->fc1);
    mlp_case_free (mc);
  }
}

/* The fused MLP, in place as the network calls it (t = β·t +
 * fc2(GELU(fc1(LN(t)))), then EHAT's acc += 0.4·t): against double, and t
 * bit for bit against the three ops it replaces (within 1e-5 with
 * OpenBLAS); rows that are no multiple of its 64-row blocks; packed
 * weights and W as it is. */
static void
test_mlp (void)
{
  static const int shapes[][3] = { {37, 19, 38}, {601, 40, 80},
    {130, 180, 360}, {3, 144, 288},
  };
  float beta = 0.7f;

  for (guint si = 0; si < G_N_ELEMENTS (shapes); si++) {
    MlpCase *mc = mlp_case_new (rng, shapes[si][0], shapes[si][1],
        shapes[si][2], 3.0);
    gsize nx = (gsize) mc->rows * mc->in;
    g_autofree float *t = g_new (float, nx), *t2 = g_new (float, nx);
    g_autofree float *acc0 = rnd (nx, 1.0), *acc = g_new (float, nx);
    g_autofree double *ref = g_new (double, nx);
    g_autofree double *want = g_new (double, nx);

    mlp_case_ref (mc, beta, ref, NULL);
    for (gsize i = 0; i < nx; i++)
      want[i] = acc0[i] + 0.4 * ref[i];
    for (int v = 0; v < 2; v++) {
      if (v == 1) {
        g_assert_true (be->ops->prepare_linear (be, &mc->fc1, NULL));
        g_assert_true (be->ops->prepare_linear (be, &mc->fc2, NULL));
      }
      memcpy (t, mc->x, nx * sizeof (float));
      memcpy (acc, acc0, nx * sizeof (float));
      be->ops->mlp (be, &mc->nw, &mc->fc1, &mc->fc2, t, mc->rows, t, beta,
          acc, 0.4f);
      assert_close (t, ref, nx, 1e-4);
      assert_close (acc, want, nx, 1e-4);
      memcpy (t2, mc->x, nx * sizeof (float));
      mlp_case_unfused (be, mc, beta, t2);
      /* the own kernels compute each row alike in any block; OpenBLAS
       * may pick other kernels for other row counts */
      if (mc->fc1.prepared)
        g_assert_cmpmem (t, nx * sizeof (float), t2, nx * sizeof (float));
      else
        for (gsize i = 0; i < nx; i++)
          g_assert_cmpfloat (fabsf (t[i] - t2[i]), <=, 1e-5f * (1.0f
                  + fabsf (t2[i])));
    }
    be->ops->release_linear (be, &mc->fc1);
    be->ops->release_linear (be, &mc->fc2);
    mlp_case_free (mc);
  }
}

static void
test_linear_layernorm_axpby (void)
{
  int rows = 37, in = 19, out = 23;
  g_autofree float *x = rnd ((gsize) rows * in, 1.0);
  g_autofree float *w = rnd ((gsize) out * in, 0.5);
  g_autofree float *b = rnd (out, 0.5);
  g_autofree float *y = rnd ((gsize) rows * out, 1.0);
  g_autofree float *y0 = g_memdup2 (y, (gsize) rows * out * sizeof (float));
  g_autofree double *ref = g_new (double, (gsize) rows * MAX (out, in));
  EhatLinearW lw = { w, b, in, out, NULL };
  EhatNormW nw = { rnd (in, 1.0), rnd (in, 1.0) };

  /* W as it is (OpenBLAS), then W prepared (packed) by the backend */
  for (int v = 0; v < 4; v++) {
    int beta = v % 2;
    EhatAct act = beta ? EHAT_ACT_NONE : EHAT_ACT_GELU;
    if (v == 2) {
      g_assert_true (be->ops->prepare_linear (be, &lw, NULL));
      g_assert_true (lw.prepared != NULL
          || !((EhatCpuBackend *) be)->own_f32);
    }
    memcpy (y, y0, (gsize) rows * out * sizeof (float));
    be->ops->linear (be, &lw, x, rows, y, act, beta ? 0.3f : 0.0f);
    linear_ref (x, w, b, rows, in, out, ref);
    for (gsize i = 0; i < (gsize) rows * out; i++)
      ref[i] = beta ? ref[i] + 0.3 * y0[i] : gelu_ref (ref[i]);
    assert_close (y, ref, (gsize) rows * out, 1e-5);
  }
  be->ops->release_linear (be, &lw);
  g_assert_null (lw.prepared);

  /* LayerNorm in place, against a double two-pass reference. */
  layernorm_ref (x, &nw, rows, in, ref);
  be->ops->layernorm (be, &nw, x, rows, in, x);
  assert_close (x, ref, (gsize) rows * in, 2e-5);

  /* axpby, including b = 0 over a NaN-filled y */
  for (int i = 0; i < out; i++) {
    y[i] = NAN;
    ref[i] = 2.0 * b[i];
  }
  be->ops->axpby (be, y, 2.0f, b, 0.0f, out);
  assert_close (y, ref, out, 0.0);
  g_free (nw.w);
  g_free (nw.b);
}

/* Naive HAB attention: explicit roll, window partition, mask from the
 * label image, bias table lookup, softmax, reverse (EHAT-SPEC.md §4). */
static void
naive_window_attention (const float *qkv, int h, int w, int c, int heads,
    int ws, int shift, const float *table, double *out)
{
  int d = c / heads, nt = ws * ws;
  double scale = 1.0 / sqrt ((double) d);
  g_autofree double *sc = g_new (double, nt);
  g_autofree int *label = g_new (int, (gsize) h * w);

  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      int ly = y < h - ws ? 0 : y < h - shift ? 1 : 2;
      int lx = x < w - ws ? 0 : x < w - shift ? 1 : 2;
      label[y * w + x] = 3 * ly + lx;
    }
  for (int wy = 0; wy < h / ws; wy++)
    for (int wx = 0; wx < w / ws; wx++)
      for (int hd = 0; hd < heads; hd++)
        for (int i = 0; i < nt; i++) {
          int py = wy * ws + i / ws, px = wx * ws + i % ws;
          /* shifted[p] = original[(p + shift) mod size] */
          int oy = (py + shift) % h, ox = (px + shift) % w;
          const float *qi = qkv + ((gsize) oy * w + ox) * 3 * c + hd * d;
          double mx = -INFINITY, sum = 0;
          for (int j = 0; j < nt; j++) {
            int qy = wy * ws + j / ws, qx = wx * ws + j % ws;
            int jy = (qy + shift) % h, jx = (qx + shift) % w;
            const float *kj = qkv + ((gsize) jy * w + jx) * 3 * c + c + hd * d;
            double s = 0;
            for (int e = 0; e < d; e++)
              s += qi[e] * scale * kj[e];
            s += table[ehat_rel_index_sa (ws, i, j) * heads + hd];
            if (shift && label[py * w + px] != label[qy * w + qx])
              s += -100.0;
            sc[j] = s;
            mx = MAX (mx, s);
          }
          for (int j = 0; j < nt; j++)
            sum += (sc[j] = exp (sc[j] - mx));
          for (int e = 0; e < d; e++) {
            double o = 0;
            for (int j = 0; j < nt; j++) {
              int qy = wy * ws + j / ws, qx = wx * ws + j % ws;
              int jy = (qy + shift) % h, jx = (qx + shift) % w;
              o += sc[j] / sum * qkv[((gsize) jy * w + jx) * 3 * c + 2 * c
                  + hd * d + e];
            }
            out[((gsize) oy * w + ox) * c + hd * d + e] = o;
          }
        }
}

static void
check_window_attention (EhatBackend *b)
{
  static const int cases[][5] = {
    /* h, w, c, heads, ws */
    {8, 8, 12, 3, 4}, {16, 24, 20, 4, 8}, {12, 6, 6, 2, 6}, {8, 16, 35, 5, 8},
    /* head dimensions 24 and 30 (HAT-S, HAT): the AVX-512 kernels' second
     * vector of output columns, 256- and 512-bit */
    {16, 16, 48, 2, 8}, {8, 8, 60, 2, 4},
    /* rows of 3 keys: a vector of 8 spans three, so the x86 kernels read
     * the dense bias (AVX-512 does for windows of 4 as well) */
    {9, 12, 16, 2, 3},
  };
  for (guint ci = 0; ci < G_N_ELEMENTS (cases); ci++) {
    int h = cases[ci][0], w = cases[ci][1], c = cases[ci][2];
    int heads = cases[ci][3], ws = cases[ci][4];
    int nl = (2 * ws - 1) * (2 * ws - 1);
    g_autofree float *qkv = rnd ((gsize) h * w * 3 * c, 2.0);
    g_autofree float *table = rnd ((gsize) nl * heads, 1.0);
    g_autofree gint32 *index = ehat_rel_index_table (ws, 0, FALSE);
    g_autofree float *out = g_new (float, (gsize) h * w * c);
    g_autofree double *ref = g_new (double, (gsize) h * w * c);

    for (int shift = 0; shift <= ws / 2; shift += ws / 2) {
      naive_window_attention (qkv, h, w, c, heads, ws, shift, table, ref);
      b->ops->window_attention (b, qkv, 1, h, w, c, heads, ws, shift, table,
          index, out);
      assert_close (out, ref, (gsize) h * w * c, 2e-5);
    }
  }
}

/* Naive OCAB: unfold with zero padding, bias index with negative values
 * wrapping around the table (EHAT-SPEC.md §4). */
static void
check_overlap_attention (EhatBackend *b)
{
  static const int cases[][5] = {
    {8, 8, 12, 3, 4}, {16, 24, 20, 4, 8}, {12, 18, 6, 2, 6},
    {16, 16, 48, 2, 8}, {8, 8, 60, 2, 4}, {8, 6, 12, 2, 2},
  };
  for (guint ci = 0; ci < G_N_ELEMENTS (cases); ci++) {
    int h = cases[ci][0], w = cases[ci][1], c = cases[ci][2];
    int heads = cases[ci][3], ws = cases[ci][4], wse = ws + ws / 2;
    int d = c / heads, side = ws + wse - 1, L = side * side;
    int p = (wse - ws) / 2, nq = ws * ws, nk = wse * wse;
    double scale = 1.0 / sqrt ((double) d);
    g_autofree float *qkv = rnd ((gsize) h * w * 3 * c, 2.0);
    g_autofree float *table = rnd ((gsize) L * heads, 1.0);
    g_autofree gint32 *index = ehat_rel_index_table (ws, wse, TRUE);
    g_autofree float *out = g_new (float, (gsize) h * w * c);
    g_autofree double *ref = g_new (double, (gsize) h * w * c);
    g_autofree double *sc = g_new (double, nk);

    for (int wy = 0; wy < h / ws; wy++)
      for (int wx = 0; wx < w / ws; wx++)
        for (int hd = 0; hd < heads; hd++)
          for (int i = 0; i < nq; i++) {
            int yi = i / ws, xi = i % ws;
            gsize qp = (gsize) (wy * ws + yi) * w + wx * ws + xi;
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j < nk; j++) {
              int yj = j / wse, xj = j % wse;
              int ky = wy * ws - p + yj, kx = wx * ws - p + xj;
              int idx = (yj - yi + ws - wse + 1) * side + (xj - xi + ws - wse
                  + 1);
              double s = 0;
              if (ky >= 0 && ky < h && kx >= 0 && kx < w)
                for (int e = 0; e < d; e++)
                  s += qkv[qp * 3 * c + hd * d + e] * scale
                      * qkv[((gsize) ky * w + kx) * 3 * c + c + hd * d + e];
              if (idx < 0)
                idx += L;
              sc[j] = s + table[idx * heads + hd];
              mx = MAX (mx, sc[j]);
            }
            for (int j = 0; j < nk; j++)
              sum += (sc[j] = exp (sc[j] - mx));
            for (int e = 0; e < d; e++) {
              double o = 0;
              for (int j = 0; j < nk; j++) {
                int ky = wy * ws - p + j / wse, kx = wx * ws - p + j % wse;
                if (ky >= 0 && ky < h && kx >= 0 && kx < w)
                  o += sc[j] / sum * qkv[((gsize) ky * w + kx) * 3 * c + 2 * c
                      + hd * d + e];
              }
              ref[qp * c + hd * d + e] = o;
            }
          }
    b->ops->overlap_attention (b, qkv, 1, h, w, c, heads, ws, wse, table,
        index, out);
    assert_close (out, ref, (gsize) h * w * c, 2e-5);
  }
}

static void
test_window_attention (void)
{
  for_each_kernel_set (check_window_attention);
}

static void
test_overlap_attention (void)
{
  for_each_kernel_set (check_overlap_attention);
}

/* channel_attention_add (CAB's residual sums folded into the scaling):
 * t = w1·t + alpha·(v·gate + w0·x0) with x0 (EHAT) and without it, w1 = 0
 * over a NaN-filled t (never read); against double (ref = v·gate) and
 * against channel_attention + axpby + axpby; v left unchanged. */
static void
check_channel_attention_add (EhatBackend *b, const EhatLinearW *down,
    const EhatLinearW *up, const float *v, int n, int hw, int c,
    const double *ref)
{
  gsize nv = (gsize) n * hw * c;
  g_autofree float *v0 = g_memdup2 (v, nv * sizeof (float));
  g_autofree float *x0 = rnd (nv, 1.0), *t = rnd (nv, 1.0);
  g_autofree float *t2 = g_memdup2 (t, nv * sizeof (float));
  g_autofree float *a = g_memdup2 (v, nv * sizeof (float));
  g_autofree double *want = g_new (double, nv);
  float w0 = 0.3f, alpha = 0.02f, w1 = 0.9f;

  for (gsize i = 0; i < nv; i++)
    want[i] = w1 * (double) t[i] + alpha * (ref[i] + w0 * (double) x0[i]);
  b->ops->channel_attention_add (b, down, up, v, n, hw, c, w0, x0, alpha, w1,
      t);
  assert_close (t, want, nv, 1e-5);
  g_assert_cmpmem (v, nv * sizeof (float), v0, nv * sizeof (float));
  b->ops->channel_attention (b, down, up, a, n, hw, c);
  b->ops->axpby (b, a, w0, x0, 1.0f, nv);
  b->ops->axpby (b, t2, alpha, a, w1, nv);
  /* the same expressions, but the compiler may contract them into fmas
   * differently in the two loops: a rounding apart at most */
  for (gsize i = 0; i < nv; i++)
    g_assert_cmpfloat (fabsf (t[i] - t2[i]), <=, 1e-6f * (1.0f
            + fabsf (t2[i])));

  for (gsize i = 0; i < nv; i++) {
    t[i] = NAN;
    want[i] = alpha * ref[i];
  }
  b->ops->channel_attention_add (b, down, up, v, n, hw, c, 0.0f, NULL, alpha,
      0.0f, t);
  assert_close (t, want, nv, 1e-6);
}

/* hw crosses the backend's chunking of the mean; 1 and 3 threads */
static void
check_channel_attention (EhatBackend *b, int hw)
{
  int n = 2, c = 12, sq = 3;
  g_autofree float *v = rnd ((gsize) n * hw * c, 1.0);
  g_autofree double *ref = g_new (double, (gsize) n * hw * c);
  EhatLinearW down = { rnd ((gsize) sq * c, 1.0), rnd (sq, 1.0), c, sq, NULL };
  EhatLinearW up = { rnd ((gsize) c * sq, 1.0), rnd (c, 1.0), sq, c, NULL };

  for (int i = 0; i < n; i++) {
    double mean[12] = { 0 }, mid[3], sc[12];
    for (int r = 0; r < hw; r++)
      for (int j = 0; j < c; j++)
        mean[j] += v[((gsize) i * hw + r) * c + j] / (double) hw;
    for (int o = 0; o < sq; o++) {
      double s = down.b[o];
      for (int j = 0; j < c; j++)
        s += down.w[o * c + j] * mean[j];
      mid[o] = s > 0 ? s : 0;
    }
    for (int o = 0; o < c; o++) {
      double s = up.b[o];
      for (int j = 0; j < sq; j++)
        s += up.w[o * sq + j] * mid[j];
      sc[o] = 1.0 / (1.0 + exp (-s));
    }
    for (int r = 0; r < hw; r++)
      for (int j = 0; j < c; j++)
        ref[((gsize) i * hw + r) * c + j] =
            v[((gsize) i * hw + r) * c + j] * sc[j];
  }
  check_channel_attention_add (b, &down, &up, v, n, hw, c, ref);
  b->ops->channel_attention (b, &down, &up, v, n, hw, c);
  assert_close (v, ref, (gsize) n * hw * c, 1e-5);
  g_free (down.w);
  g_free (down.b);
  g_free (up.w);
  g_free (up.b);
}

static void
test_channel_attention (void)
{
  EhatBackend *one = ehat_backend_cpu_new (1, NULL);
  EhatBackend *three = ehat_backend_cpu_new (3, NULL);

  check_channel_attention (be, 37);
  check_channel_attention (one, 2500);
  check_channel_attention (three, 2500);
  one->ops->destroy (one);
  three->ops->destroy (three);
}

/* DANet: position attention (streamed in blocks; 300 tokens cross the key
 * block size) and channel attention against materialised softmaxes. */
static void
test_danet (void)
{
  int n = 2, c = 24, dq = 3;
  gsize hw = 300;
  g_autofree float *q = rnd (n * hw * dq, 1.5);
  g_autofree float *k = rnd (n * hw * dq, 1.5);
  g_autofree float *v = rnd (n * hw * c, 1.0);
  g_autofree float *out = rnd (n * hw * c, 1.0);
  g_autofree double *ref = g_new (double, n * hw * c);
  g_autofree double *sc = g_new (double, hw);

  for (gsize i = 0; i < n * hw * c; i++)
    ref[i] = out[i];
  for (int b = 0; b < n; b++)
    for (gsize i = 0; i < hw; i++) {
      double mx = -INFINITY, sum = 0;
      for (gsize j = 0; j < hw; j++) {
        double d = 0;
        for (int e = 0; e < dq; e++)
          d += (double) q[(b * hw + i) * dq + e] * k[(b * hw + j) * dq + e];
        sc[j] = d;
        mx = MAX (mx, d);
      }
      for (gsize j = 0; j < hw; j++)
        sum += (sc[j] = exp (sc[j] - mx));
      for (int e = 0; e < c; e++) {
        double o = 0;
        for (gsize j = 0; j < hw; j++)
          o += sc[j] / sum * v[(b * hw + j) * c + e];
        ref[(b * hw + i) * c + e] += 0.7 * o;
      }
    }
  be->ops->position_attention (be, q, k, v, n, hw, dq, c, 0.7f, out);
  assert_close (out, ref, n * hw * c, 2e-5);

  /* CAM on v, accumulated into out */
  for (int b = 0; b < n; b++) {
    double E[24][24], A[24][24];
    const float *f = v + b * hw * c;
    for (int c1 = 0; c1 < c; c1++) {
      double mx = -INFINITY, mx2 = -INFINITY, sum = 0;
      for (int c2 = 0; c2 < c; c2++) {
        E[c1][c2] = 0;
        for (gsize t = 0; t < hw; t++)
          E[c1][c2] += (double) f[t * c + c1] * f[t * c + c2];
        mx = MAX (mx, E[c1][c2]);
      }
      for (int c2 = 0; c2 < c; c2++)
        mx2 = MAX (mx2, A[c1][c2] = mx - E[c1][c2]);
      for (int c2 = 0; c2 < c; c2++)
        sum += (A[c1][c2] = exp (A[c1][c2] - mx2));
      for (int c2 = 0; c2 < c; c2++)
        A[c1][c2] /= sum;
    }
    for (gsize t = 0; t < hw; t++)
      for (int c1 = 0; c1 < c; c1++) {
        double o = 0;
        for (int c2 = 0; c2 < c; c2++)
          o += A[c1][c2] * f[t * c + c2];
        ref[(b * hw + t) * c + c1] += -0.4 * o;
      }
  }
  be->ops->channel_gram_attention (be, v, n, hw, c, -0.4f, out);
  assert_close (out, ref, n * hw * c, 2e-5);
}

/* Reflect padding beyond the size (periodic mirror), 1-pixel sides, and
 * the normalisation; then the output crop inverts it. */
static void
test_input_output (void)
{
  int w = 3, h = 1, W = 8, H = 4;
  float in[9] = { 0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f, 0.9f };
  float mean[3] = { 0.5f, 0.25f, 0.0f };
  float x[4 * 8 * 3], back[9];
  /* columns of the mirror with period 4: 0 1 2 1 0 1 2 1 */
  static const int col[8] = { 0, 1, 2, 1, 0, 1, 2, 1 };

  be->ops->input (be, in, 1, w, h, W, H, mean, 2.0f, x);
  for (int y = 0; y < H; y++)
    for (int xx = 0; xx < W; xx++)
      for (int c = 0; c < 3; c++)
        g_assert_cmpfloat_with_epsilon (x[(y * W + xx) * 3 + c],
            (in[c * 3 + col[xx]] - mean[c]) * 2.0f, 1e-7);
  be->ops->output (be, x, 1, W, H, w, h, mean, 2.0f, back);
  for (int i = 0; i < 9; i++)
    g_assert_cmpfloat_with_epsilon (back[i], in[i], 1e-6);
}

static void
test_rel_index (void)
{
  /* The OCA index must reproduce PyTorch's negative indexing: spot values
   * computed by hand for ws 4, wse 6 (side 9, L 81). */
  g_assert_cmpint (ehat_rel_index_oca (4, 6, 0, 0), ==, (-1 * 9 + -1) + 81);
  g_assert_cmpint (ehat_rel_index_oca (4, 6, 15, 35), ==,
      (5 - 3 - 1) * 9 + (5 - 3 - 1));
  g_assert_cmpint (ehat_rel_index_sa (4, 0, 15), ==, (0 - 3 + 3) * 7 + 0);
  g_assert_cmpint (ehat_rel_index_sa (4, 15, 0), ==, 6 * 7 + 6);
}

int
main (int argc, char **argv)
{
  int rc;

  g_test_init (&argc, &argv, NULL);
  rng = g_rand_new_with_seed (1234);
  be = ehat_backend_cpu_new (2, NULL);
  g_test_add_func ("/ops/math", test_math);
  g_test_add_func ("/ops/conv", test_conv);
  g_test_add_func ("/ops/linear-layernorm-axpby", test_linear_layernorm_axpby);
  g_test_add_func ("/ops/linear-panels", test_linear_panels);
  g_test_add_func ("/ops/norm-linear", test_norm_linear);
  g_test_add_func ("/ops/mlp", test_mlp);
  g_test_add_func ("/ops/window-attention", test_window_attention);
  g_test_add_func ("/ops/overlap-attention", test_overlap_attention);
  g_test_add_func ("/ops/channel-attention", test_channel_attention);
  g_test_add_func ("/ops/danet", test_danet);
  g_test_add_func ("/ops/input-output", test_input_output);
  g_test_add_func ("/ops/rel-index", test_rel_index);
  rc = g_test_run ();
  be->ops->destroy (be);
  g_rand_free (rng);
  return rc;
}
