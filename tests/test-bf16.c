/* precision=bf16 on the CPU (AVX512-BF16 GEMMs, fp32 accumulation):
 *  - the GEMM kernels against a double reference on bf16-rounded inputs
 *    (odd shapes, every epilogue), so only fp32 accumulation error remains;
 *  - every golden case through the engine in bf16: PSNR against the
 *    golden output ≥ 38 dB (random weights, the worst case);
 *  - the shipped trained models on a real image: bf16 against fp32
 *    ≥ 45 dB;
 *  - the fallback: without AVX512-BF16 (or with EHAT_CPU_NO_BF16 set) the
 *    engine runs fp32 and says why.
 * The bf16 cases are TAP skips on a CPU without AVX512-BF16; the fallback
 * case runs everywhere. */
#include "ehat.h"
#include "ehat-cpu.h"
#include "ehat-network.h"
#include "ehat-png.h"
#include "golden-util.h"
#include "mlp-case.h"

#include <math.h>
#include <string.h>

static GRand *rng;

static gboolean
need_bf16 (void)
{
  if (ehat_cpu_has_bf16 ())
    return TRUE;
  g_test_skip ("this CPU has no AVX512-BF16");
  return FALSE;
}

static float *
rnd (gsize n, double scale)
{
  float *p = g_new (float, n);
  for (gsize i = 0; i < n; i++)
    p[i] = (float) g_rand_double_range (rng, -scale, scale);
  return p;
}

static double
bf (float x)
{
  guint16 h;
  ehat_f32_to_bf16 (&h, &x, 1);
  return ehat_bf16_to_f32 (h);
}

static double
gelu_ref (double x)
{
  return 0.5 * x * (1.0 + erf (x / sqrt (2.0)));
}

/* Linear and conv ops of a bf16 backend against double sums of the
 * bf16-rounded operands. */
static void
test_ops (void)
{
  static const int lin[][3] = { {37, 40, 23}, {8, 144, 432}, {100, 288, 144},
    {3, 33, 17}, {61, 64, 50}, {21, 40, 60}, {19, 48, 112}, {9, 32, 256},
  };
  static const int conv[][5] = { {1, 5, 7, 6, 16}, {2, 8, 3, 13, 40},
    {1, 33, 2, 64, 64}, {1, 4, 4, 5, 3},
    /* direct narrow convolutions (≤ 8 outputs): CAB's squeeze, odd sizes */
    {2, 6, 9, 144, 6}, {1, 5, 5, 7, 8}, {1, 3, 11, 40, 5},
  };
  EhatBackend *be;

  if (!need_bf16 ())
    return;
  be = ehat_backend_cpu_new_full (2, TRUE, NULL);
  g_assert_true (((EhatCpuBackend *) be)->bf16);

  for (guint si = 0; si < G_N_ELEMENTS (lin); si++) {
    int rows = lin[si][0], in = lin[si][1], out = lin[si][2];
    g_autofree float *x = rnd ((gsize) rows * in, 1.0);
    g_autofree float *w = rnd ((gsize) out * in, 0.5);
    g_autofree float *b = rnd (out, 0.5);
    g_autofree float *y0 = rnd ((gsize) rows * out, 1.0);
    g_autofree float *y = g_new (float, (gsize) rows * out);
    EhatLinearW lw = { w, b, in, out, NULL };

    g_assert_true (be->ops->prepare_linear (be, &lw, NULL));
    g_assert_nonnull (lw.prepared);

    for (int v = 0; v < 2; v++) {
      EhatAct act = v ? EHAT_ACT_NONE : EHAT_ACT_GELU;
      float beta = v ? 0.3f : 0.0f;
      double worst = 0.0;
      memcpy (y, y0, (gsize) rows * out * sizeof (float));
      be->ops->linear (be, &lw, x, rows, y, act, beta);
      for (int r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) {
          double s = b[o], mag = 0.0;
          for (int k = 0; k < in; k++) {
            s += bf (x[r * in + k]) * bf (w[o * in + k]);
            mag += fabs (bf (x[r * in + k]) * bf (w[o * in + k]));
          }
          s = v ? s + beta * y0[r * out + o] : gelu_ref (s);
          worst = MAX (worst, fabs (y[r * out + o] - s) / (1.0 + mag));
        }
      g_test_message ("linear %d×%d→%d act %d: worst error %.3g", rows, in,
          out, act, worst);
      g_assert_cmpfloat (worst, <, 1e-5);
    }
    be->ops->release_linear (be, &lw);
  }

  for (guint si = 0; si < G_N_ELEMENTS (conv); si++) {
    int n = conv[si][0], h = conv[si][1], w = conv[si][2];
    int cin = conv[si][3], cout = conv[si][4];
    gsize ny = (gsize) n * h * w * cout;
    g_autofree float *x = rnd ((gsize) n * h * w * cin, 1.0);
    g_autofree float *wt = rnd ((gsize) cout * cin * 9, 0.5);
    g_autofree float *res = rnd (ny, 1.0);
    g_autofree float *y = g_new (float, ny);
    EhatConvW cw = { NULL, rnd (cout, 0.5), cin, cout, 3 };
    /* The backend's rule: fp32 Winograd where it suits (16 channels or
     * more in, more than 8 out: 33×2×64→64); else bf16 where k ≥ 32 and
     * cout ≥ 16, or 4 ≤ cout ≤ 8 (the direct narrow convolution); else
     * fp32 */
    gboolean wino = ehat_winograd_suits (3, cin, cout);
    gboolean is_bf16 = !wino && cin * 9 >= 32 && (cout >= 16 || (cout > 3
            && cout <= EHAT_NARROW_MAX));
    double worst = 0.0;

    cw.w = be->ops->upload_conv (be, wt, cout, cin, 3, NULL);
    g_assert_cmpint (((const EhatGemmB *) cw.w)->kind == EHAT_GEMM_WINOGRAD,
        ==, wino);
    memcpy (y, res, ny * sizeof (float));
    be->ops->conv (be, &cw, x, n, h, w, y, EHAT_ACT_NONE, y, 0.7f, 1);
    for (int i = 0; i < n; i++)
      for (int yy = 0; yy < h; yy++)
        for (int xx = 0; xx < w; xx++)
          for (int o = 0; o < cout; o++) {
            gsize p = ((gsize) i * h + yy) * w + xx;
            double s = cw.b[o], mag = 0.0;
            for (int ci = 0; ci < cin; ci++)
              for (int ky = 0; ky < 3; ky++)
                for (int kx = 0; kx < 3; kx++) {
                  int sy = yy + ky - 1, sx = xx + kx - 1;
                  float a, bb;
                  double t;
                  if (sy < 0 || sy >= h || sx < 0 || sx >= w)
                    continue;
                  a = x[(((gsize) i * h + sy) * w + sx) * cin + ci];
                  bb = wt[((o * cin + ci) * 3 + ky) * 3 + kx];
                  t = is_bf16 ? bf (a) * bf (bb) : (double) a * bb;
                  s += t;
                  mag += fabs (t);
                }
            s += 0.7 * res[p * cout + o];
            worst = MAX (worst, fabs (y[p * cout + o] - s) / (1.0 + mag));
          }
    g_test_message ("conv %d×%d×%d→%d (%s): worst error %.3g", h, w, cin,
        cout, wino ? "fp32 Winograd" : is_bf16 ? "bf16" : "fp32", worst);
    g_assert_cmpfloat (worst, <, 1e-5);
    be->ops->free (be, cw.w);
    g_free (cw.b);
  }
  be->ops->destroy (be);
}

/* norm_linear in bf16 (LayerNorm applied as A is converted to bf16): bit
 * for bit the layernorm op followed by the linear op (whose GEMM test_ops
 * checks), and near the double LN → linear → GELU; odd k, a pad column,
 * and more rows than one block. */
static void
test_norm_linear (void)
{
  static const int shapes[][3] = { {61, 64, 50}, {9, 33, 17},
    {1100, 144, 432}, {40, 180, 360},
  };
  EhatBackend *be;

  if (!need_bf16 ())
    return;
  be = ehat_backend_cpu_new_full (2, TRUE, NULL);
  for (guint si = 0; si < G_N_ELEMENTS (shapes); si++) {
    MlpCase *mc = mlp_case_new (rng, shapes[si][0], shapes[si][1],
        shapes[si][2], 5.0);
    int rows = mc->rows, in = mc->in, out = mc->hid;
    gsize nx = (gsize) rows * in, ny = (gsize) rows * out;
    g_autofree float *y = g_new (float, ny), *y2 = g_new (float, ny);
    g_autofree float *n = g_new (float, nx);
    g_autofree double *h = g_new (double, out), *mag = g_new (double, out);
    double worst = 0.0;

    g_assert_true (be->ops->prepare_linear (be, &mc->fc1, NULL));
    be->ops->norm_linear (be, &mc->nw, &mc->fc1, mc->x, rows, y,
        EHAT_ACT_GELU);
    be->ops->layernorm (be, &mc->nw, mc->x, rows, in, n);
    be->ops->linear (be, &mc->fc1, n, rows, y2, EHAT_ACT_GELU, 0.0f);
    g_assert_cmpmem (y, ny * sizeof (float), y2, ny * sizeof (float));
    for (int r = 0; r < rows; r++) {
      mlp_case_hidden (mc, r, h, mag);
      for (int o = 0; o < out; o++)
        worst = MAX (worst, fabs (y[(gsize) r * out + o] - h[o])
            / (1.0 + mag[o]));
    }
    g_test_message ("norm_linear %d×%d→%d: worst error %.3g", rows, in, out,
        worst);
    /* two bf16 roundings (LN output, W): ≤ 2⁻⁸ relative each */
    g_assert_cmpfloat (worst, <, 1e-2);
    be->ops->release_linear (be, &mc->fc1);
    mlp_case_free (mc);
  }
  be->ops->destroy (be);
}

/* The fused MLP in bf16, in place: bit for bit the layernorm, linear and
 * linear ops it replaces, and near double LN → fc1 → GELU → fc2 + β·x. */
static void
test_mlp (void)
{
  static const int shapes[][3] = { {200, 180, 360}, {7, 33, 66},
    {129, 144, 288},
  };
  float beta = 0.7f;
  EhatBackend *be;

  if (!need_bf16 ())
    return;
  be = ehat_backend_cpu_new_full (2, TRUE, NULL);
  for (guint si = 0; si < G_N_ELEMENTS (shapes); si++) {
    MlpCase *mc = mlp_case_new (rng, shapes[si][0], shapes[si][1],
        shapes[si][2], 0.0);
    gsize nx = (gsize) mc->rows * mc->in;
    g_autofree float *t = g_memdup2 (mc->x, nx * sizeof (float));
    g_autofree float *t2 = g_memdup2 (mc->x, nx * sizeof (float));
    g_autofree double *ref = g_new (double, nx);
    g_autofree double *mag = g_new (double, mc->rows);
    double worst = 0.0;

    g_assert_true (be->ops->prepare_linear (be, &mc->fc1, NULL));
    g_assert_true (be->ops->prepare_linear (be, &mc->fc2, NULL));
    be->ops->mlp (be, &mc->nw, &mc->fc1, &mc->fc2, t, mc->rows, t, beta,
        NULL, 0.0f);
    mlp_case_unfused (be, mc, beta, t2);
    g_assert_cmpmem (t, nx * sizeof (float), t2, nx * sizeof (float));
    mlp_case_ref (mc, beta, ref, mag);
    for (gsize i = 0; i < nx; i++)
      worst = MAX (worst, fabs (t[i] - ref[i]) / (1.0 + 0.2
              * mag[i / mc->in]));
    g_test_message ("mlp %d×%d→%d: worst error %.3g", mc->rows, mc->in,
        mc->hid, worst);
    g_assert_cmpfloat (worst, <, 1e-2);
    be->ops->release_linear (be, &mc->fc1);
    be->ops->release_linear (be, &mc->fc2);
    mlp_case_free (mc);
  }
  be->ops->destroy (be);
}

/* Window (shifted or not) and overlapping attention of a bf16 backend
 * (q·kᵀ and P·v in bf16, softmax fp32) against the fp32 backend, head
 * dimensions 9 (odd), 24 and 30. */
static void
test_attention (void)
{
  static const int cases[][5] = {
    /* h, w, c, heads, ws */
    {16, 16, 36, 4, 8}, {32, 32, 48, 2, 16}, {16, 8, 60, 2, 8},
  };
  EhatBackend *b16, *b32;

  if (!need_bf16 ())
    return;
  b16 = ehat_backend_cpu_new_full (2, TRUE, NULL);
  b32 = ehat_backend_cpu_new_full (2, FALSE, NULL);
  for (guint ci = 0; ci < G_N_ELEMENTS (cases); ci++) {
    int h = cases[ci][0], w = cases[ci][1], c = cases[ci][2];
    int heads = cases[ci][3], ws = cases[ci][4], wse = ws + ws / 2;
    gsize n = (gsize) h * w * c;
    int ls = (2 * ws - 1) * (2 * ws - 1), lo = (ws + wse - 1) * (ws + wse - 1);
    g_autofree float *qkv = rnd (3 * n, 2.0);
    g_autofree float *ts = rnd ((gsize) ls * heads, 1.0);
    g_autofree float *to = rnd ((gsize) lo * heads, 1.0);
    g_autofree gint32 *is = ehat_rel_index_table (ws, 0, FALSE);
    g_autofree gint32 *io = ehat_rel_index_table (ws, wse, TRUE);
    g_autofree float *o16 = g_new (float, n), *o32 = g_new (float, n);

    for (int kind = 0; kind < 3; kind++) {
      double diff;
      if (kind < 2) {
        int shift = kind ? ws / 2 : 0;
        b16->ops->window_attention (b16, qkv, 1, h, w, c, heads, ws, shift,
            ts, is, o16);
        b32->ops->window_attention (b32, qkv, 1, h, w, c, heads, ws, shift,
            ts, is, o32);
      } else {
        b16->ops->overlap_attention (b16, qkv, 1, h, w, c, heads, ws, wse, to,
            io, o16);
        b32->ops->overlap_attention (b32, qkv, 1, h, w, c, heads, ws, wse, to,
            io, o32);
      }
      diff = max_abs_diff (o16, o32, n);
      g_test_message ("attention %dx%d c %d heads %d ws %d kind %d: bf16 vs "
          "fp32 max abs diff %.3g", h, w, c, heads, ws, kind, diff);
      /* values O(1); bf16 keeps 8 bits */
      g_assert_cmpfloat (diff, <, 0.05);
    }
  }
  b16->ops->destroy (b16);
  b32->ops->destroy (b32);
}

static EhatEngine *
engine_for (EhatModel *model, EhatPrecision p)
{
  EhatEngineOptions o = EHAT_ENGINE_OPTIONS_INIT;
  g_autoptr (GError) error = NULL;
  EhatEngine *e;

  o.backend = EHAT_BACKEND_CPU;
  o.precision = p;
  o.n_threads = 2;
  e = ehat_engine_new (model, &o, &error);
  g_assert_no_error (error);
  return e;
}

static void
test_golden (gconstpointer data)
{
  const char *dir = data;       /* "<golden dir>/<case>" */
  g_autofree char *name = g_path_get_basename (dir);
  g_autofree char *mp = g_build_filename (dir, "model.safetensors", NULL);
  g_autofree char *lp = g_build_filename (dir, "lr.safetensors", NULL);
  g_autofree char *sp = g_build_filename (dir, "sr.safetensors", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (EhatModel) model = NULL;
  g_autoptr (EhatEngine) engine = NULL;
  g_autofree float *out = NULL;
  Image lr, sr;
  gsize n_out;
  double db;

  if (!need_bf16 ())
    return;
  model = ehat_model_load (mp, &error);
  g_assert_no_error (error);
  engine = engine_for (model, EHAT_PRECISION_BF16);
  g_assert_cmpint (ehat_engine_get_precision (engine), ==,
      EHAT_PRECISION_BF16);
  g_assert_null (ehat_engine_get_fallback_reason (engine));
  g_assert_nonnull (strstr (ehat_engine_describe (engine), "bf16"));
  lr = read_image (lp);
  sr = read_image (sp);
  n_out = (gsize) sr.n * 3 * sr.h * sr.w;
  out = g_new (float, n_out);
  g_assert_true (ehat_engine_process (engine, lr.data, lr.n, lr.w, lr.h, out,
          &error));
  g_assert_no_error (error);
  db = psnr (out, sr.data, n_out);
  g_test_message ("%s: bf16 vs golden PSNR %.2f dB, max abs diff %.3g", name,
      db, max_abs_diff (out, sr.data, n_out));
  g_assert_cmpfloat (db, >=, 38.0);
  g_free (lr.data);
  g_free (sr.data);
}

/* The shipped trained models on a real image: bf16 against fp32. */
static void
test_shipped (gconstpointer data)
{
  const char *name = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (EhatModel) model = NULL;
  g_autoptr (EhatEngine) e32 = NULL, e16 = NULL;
  g_autofree float *in = NULL, *o32 = NULL, *o16 = NULL;
  int w, h, s;
  gsize n;
  double db;

  if (!need_bf16 ())
    return;
  if (!load_shipped (name, &model, &in, &w, &h))
    return;
  s = ehat_model_get_config (model)->upscale;
  n = (gsize) 3 * w * s * h * s;
  e32 = engine_for (model, EHAT_PRECISION_FP32);
  e16 = engine_for (model, EHAT_PRECISION_BF16);
  g_assert_cmpint (ehat_engine_get_precision (e16), ==, EHAT_PRECISION_BF16);
  o32 = g_new (float, n);
  o16 = g_new (float, n);
  g_assert_true (ehat_engine_process (e32, in, 1, w, h, o32, &error));
  g_assert_true (ehat_engine_process (e16, in, 1, w, h, o16, &error));
  g_assert_no_error (error);
  db = psnr (o16, o32, n);
  g_test_message ("%s on butterfly %dx%d: bf16 vs fp32 PSNR %.2f dB, max abs "
      "diff %.3g", name, w, h, db, max_abs_diff (o16, o32, n));
  g_assert_cmpfloat (db, >=, 45.0);
}

/* Without AVX512-BF16 (simulated with EHAT_CPU_NO_BF16 where the CPU has
 * it) bf16 runs fp32 and says why; TF32/FP16 stay refused. */
static void
test_fallback (void)
{
  const char *dir = g_getenv ("EHAT_GOLDEN_DIR");
  g_autofree char *mp = g_build_filename (dir, "hat-tiny-x2",
      "model.safetensors", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (EhatModel) model = ehat_model_load (mp, &error);
  g_autoptr (EhatEngine) engine = NULL;
  EhatEngineOptions o = EHAT_ENGINE_OPTIONS_INIT;
  const char *reason;

  g_assert_no_error (error);
  g_setenv ("EHAT_CPU_NO_BF16", "1", TRUE);
  g_assert_false (ehat_cpu_has_bf16 ());
  engine = engine_for (model, EHAT_PRECISION_BF16);
  g_unsetenv ("EHAT_CPU_NO_BF16");
  reason = ehat_engine_get_fallback_reason (engine);
  g_test_message ("fallback reason: %s; backend: %s", reason,
      ehat_engine_describe (engine));
  g_assert_nonnull (reason);
  g_assert_nonnull (strstr (reason, "AVX512-BF16"));
  g_assert_nonnull (strstr (reason, "fp32"));
  g_assert_cmpint (ehat_engine_get_precision (engine), ==,
      EHAT_PRECISION_FP32);
  g_assert_null (strstr (ehat_engine_describe (engine), "bf16"));

  o.backend = EHAT_BACKEND_CPU;
  o.precision = EHAT_PRECISION_FP16;
  g_assert_null (ehat_engine_new (model, &o, &error));
  g_assert_error (error, EHAT_ERROR, EHAT_ERROR_UNSUPPORTED);
  g_clear_error (&error);

  /* auto with a GPU precision and no GPU within reach (no module where we
   * point; this process has not loaded it before): fp32 on the CPU, said */
  g_setenv ("EHAT_BACKEND_PATH", "/nonexistent", TRUE);
  for (int i = 0; i < 2; i++) {
    g_autoptr (EhatEngine) e = NULL;

    o.backend = EHAT_BACKEND_AUTO;
    o.precision = i ? EHAT_PRECISION_TF32 : EHAT_PRECISION_FP16;
    e = ehat_engine_new (model, &o, &error);
    g_assert_no_error (error);
    reason = ehat_engine_get_fallback_reason (e);
    g_test_message ("auto + %s: %s", i ? "tf32" : "fp16", reason);
    g_assert_cmpint (ehat_engine_get_backend (e), ==, EHAT_BACKEND_CPU);
    g_assert_cmpint (ehat_engine_get_precision (e), ==, EHAT_PRECISION_FP32);
    g_assert_nonnull (strstr (reason, i ? "tf32 is a GPU precision; running "
            "fp32" : "fp16 is a GPU precision; running fp32"));
  }
  g_unsetenv ("EHAT_BACKEND_PATH");
}

int
main (int argc, char **argv)
{
  g_autoptr (GPtrArray) keep = g_ptr_array_new_with_free_func (g_free);
  const char *shared = g_getenv ("EHAT_GOLDEN_DIR");
  const char *project = g_getenv ("EHAT_PROJECT_GOLDEN_DIR");
  int rc;

  g_test_init (&argc, &argv, NULL);
  g_assert_nonnull (shared);
  g_assert_nonnull (project);
  rng = g_rand_new_with_seed (11);
  g_test_add_func ("/bf16/fallback", test_fallback);
  g_test_add_func ("/bf16/ops", test_ops);
  g_test_add_func ("/bf16/norm-linear", test_norm_linear);
  g_test_add_func ("/bf16/mlp", test_mlp);
  g_test_add_func ("/bf16/attention", test_attention);
  g_assert_cmpuint (golden_add_cases (shared, "/bf16/golden", test_golden,
          keep), >=, 5);
  g_assert_cmpuint (golden_add_cases (project, "/bf16/golden", test_golden,
          keep), >=, 2);
  g_test_add_data_func ("/bf16/shipped/ehat-fast-x2", "ehat-fast-x2",
      test_shipped);
  g_test_add_data_func ("/bf16/shipped/ehat-fast-x4", "ehat-fast-x4",
      test_shipped);
  rc = g_test_run ();
  g_rand_free (rng);
  return rc;
}
