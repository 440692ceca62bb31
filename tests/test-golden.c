/* Golden parity: every case of ../shared/golden (outputs of the original
 * PyTorch code) and of tests/golden (the project's reference, for DANet
 * and inputs smaller than an absolute position embedding, which the
 * original lacks; see tools/make_golden.py) through the C API
 * and through `ehat run`, max abs error ≤ 1e-4 against float64 outputs. */
#include "ehat.h"
#include "golden-util.h"
#include "ehat-safetensors.h"
#include "ehat-cpu.h"

#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

#define TOLERANCE 1e-4



static void
test_api (gconstpointer data)
{
  g_autofree char *name = g_path_get_basename (data);
  const char *dir = data;     /* "<golden dir>/<case>" */
  g_autofree char *mp = g_build_filename (dir, "model.safetensors", NULL);
  g_autofree char *lp = g_build_filename (dir, "lr.safetensors", NULL);
  g_autofree char *sp = g_build_filename (dir, "sr.safetensors", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (EhatModel) model = ehat_model_load (mp, &error);
  g_autoptr (EhatEngine) engine = NULL;
  EhatEngineOptions o = EHAT_ENGINE_OPTIONS_INIT;
  Image lr, sr;
  g_autofree float *out = NULL, *in2 = NULL, *out2 = NULL;
  gsize n_out, n_in;
  int s;
  double err;

  g_assert_no_error (error);
  o.backend = EHAT_BACKEND_CPU;
  engine = ehat_engine_new (model, &o, &error);
  g_assert_no_error (error);
  lr = read_image (lp);
  sr = read_image (sp);
  s = ehat_model_get_config (model)->upscale;
  g_assert_cmpint (sr.h, ==, lr.h * s);
  g_assert_cmpint (sr.w, ==, lr.w * s);

  n_in = (gsize) 3 * lr.h * lr.w;
  n_out = (gsize) 3 * sr.h * sr.w;
  out = g_new (float, n_out);
  g_assert_true (ehat_engine_process (engine, lr.data, 1, lr.w, lr.h, out,
          &error));
  g_assert_no_error (error);
  err = max_abs_diff (out, sr.data, n_out);
  g_test_message ("%s: max abs error %.3g", name, err);
  g_assert_cmpfloat (err, <=, TOLERANCE);

  /* A batch of two: the image and its mirror image; each must equal its
   * own single-image run (batching must not mix images: CAB's mean is
   * per image).  Without the own GEMM kernels (AVX-512 or AVX2) the GEMMs
   * are OpenBLAS's, which blocks a product by its row count: a batch
   * rounds differently from one image (1.2e-5 measured); mixed images
   * would differ by far more. */
  double batch_tol = ehat_cpu_has_avx512 () || ehat_cpu_has_avx2 ()
      ? 1e-5 : 5e-5;
  in2 = g_new (float, 2 * n_in);
  memcpy (in2, lr.data, n_in * sizeof (float));
  for (gsize i = 0; i < n_in; i++)
    in2[n_in + i] = 1.0f - lr.data[i];
  out2 = g_new (float, 2 * n_out);
  g_assert_true (ehat_engine_process (engine, in2, 2, lr.w, lr.h, out2,
          &error));
  g_assert_cmpfloat (max_abs_diff (out2, out, n_out), <=, batch_tol);
  g_assert_true (ehat_engine_process (engine, in2 + n_in, 1, lr.w, lr.h, out,
          &error));
  g_assert_cmpfloat (max_abs_diff (out2 + n_out, out, n_out), <=, batch_tol);

  g_free (lr.data);
  g_free (sr.data);
}

static void
test_cli (gconstpointer data)
{
  const char *cli = g_getenv ("EHAT_CLI");
  const char *dir = data;     /* "<golden dir>/<case>" */
  g_autofree char *mp = g_build_filename (dir, "model.safetensors", NULL);
  g_autofree char *lp = g_build_filename (dir, "lr.safetensors", NULL);
  g_autofree char *sp = g_build_filename (dir, "sr.safetensors", NULL);
  g_autofree char *tmp = g_dir_make_tmp ("ehat-golden-XXXXXX", NULL);
  g_autofree char *op = g_build_filename (tmp, "sr.safetensors", NULL);
  g_autofree char *out = NULL, *err = NULL;
  g_autoptr (GError) error = NULL;
  const char *argv[] = { cli, "run", "--model", mp, "--input", lp,
    "--output", op, "--backend", "cpu", NULL
  };
  int status;
  Image a, b;

  g_assert_nonnull (cli);
  g_assert_true (g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_DEFAULT,
          NULL, NULL, &out, &err, &status, &error));
  g_assert_no_error (error);
  if (!g_spawn_check_wait_status (status, NULL))
    g_error ("ehat run failed: %s", err);
  a = read_image (op);
  b = read_image (sp);
  g_assert_cmpint (a.h, ==, b.h);
  g_assert_cmpint (a.w, ==, b.w);
  g_assert_cmpfloat (max_abs_diff (a.data, b.data, (gsize) 3 * a.h * a.w),
      <=, TOLERANCE);
  g_free (a.data);
  g_free (b.data);
  g_unlink (op);
  g_rmdir (tmp);
}

int
main (int argc, char **argv)
{
  g_autoptr (GPtrArray) keep = g_ptr_array_new_with_free_func (g_free);
  const char *shared = g_getenv ("EHAT_GOLDEN_DIR");
  const char *project = g_getenv ("EHAT_PROJECT_GOLDEN_DIR");

  g_test_init (&argc, &argv, NULL);
  g_assert_nonnull (shared);
  g_assert_nonnull (project);
  /* The golden sets must not silently shrink to nothing. */
  g_assert_cmpuint (golden_add_cases (shared, "/golden/api", test_api, keep),
      >=, 5);
  g_assert_cmpuint (golden_add_cases (shared, "/golden/cli", test_cli, keep),
      >=, 5);
  g_assert_cmpuint (golden_add_cases (project, "/golden/api", test_api,
          keep), >=, 3);
  g_assert_cmpuint (golden_add_cases (project, "/golden/cli", test_cli,
          keep), >=, 3);
  return g_test_run ();
}
