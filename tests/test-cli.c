/* The `ehat` command-line tool as a user runs it: info, upscale, bench,
 * and clear errors (exit status, message) for bad input. */
#include "ehat.h"
#include "ehat-png.h"
#include "ehat-tiler.h"

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <string.h>

static const char *
golden_model (const char *name)
{
  static char path[4096];
  g_snprintf (path, sizeof path, "%s/%s/model.safetensors",
      g_getenv ("EHAT_GOLDEN_DIR"), name);
  return path;
}

/* Runs the CLI; returns its exit status, stdout and stderr. */
static int
run_cli (char **out, char **err, ...)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_autoptr (GError) error = NULL;
  va_list ap;
  const char *a;
  int status;

  g_ptr_array_add (argv, (gpointer) g_getenv ("EHAT_CLI"));
  va_start (ap, err);
  while ((a = va_arg (ap, const char *)))
    g_ptr_array_add (argv, (gpointer) a);
  va_end (ap);
  g_ptr_array_add (argv, NULL);
  g_assert_true (g_spawn_sync (NULL, (char **) argv->pdata, NULL,
          G_SPAWN_DEFAULT, NULL, NULL, out, err, &status, &error));
  g_assert_no_error (error);
  return WIFEXITED (status) ? WEXITSTATUS (status) : -1;
}

static void
test_info (void)
{
  g_autofree char *out = NULL, *err = NULL;
  int rc = run_cli (&out, &err, "info", golden_model ("ehat-small-x4"), NULL);

  g_assert_cmpint (rc, ==, 0);
  g_assert_nonnull (strstr (out, "EHAT"));
  g_assert_nonnull (strstr (out, "542591"));    /* info.json "params" */
  g_assert_nonnull (strstr (out, "x4"));
  g_assert_null (strstr (out, "position embed."));
  g_clear_pointer (&out, g_free);
  g_clear_pointer (&err, g_free);

  /* a model with an absolute position embedding says what it runs */
  {
    g_autofree char *ape = g_build_filename (g_getenv
        ("EHAT_PROJECT_GOLDEN_DIR"), "ehat-ape-x2", "model.safetensors",
        NULL);

    g_assert_cmpint (run_cli (&out, &err, "info", ape, NULL), ==, 0);
    g_assert_nonnull (strstr (out, "position embed.  32x32 (passes padded "
            "to it; larger frames run in 32x32 tiles)"));
  }
}

static void
test_upscale_png (void)
{
  g_autofree char *tmp = g_dir_make_tmp ("ehat-cli-XXXXXX", NULL);
  g_autofree char *in = g_build_filename (tmp, "in.png", NULL);
  g_autofree char *outp = g_build_filename (tmp, "out.png", NULL);
  g_autofree char *out = NULL, *err = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree guint8 *rgb = g_new (guint8, 3 * 21 * 13);
  guint8 *res = NULL;
  int w, h, rc;

  for (int i = 0; i < 3 * 21 * 13; i++)
    rgb[i] = (guint8) (i * 37 % 251);
  g_assert_true (ehat_png_write (in, rgb, 21, 13, &error));
  rc = run_cli (&out, &err, "upscale", "--model", golden_model ("hat-tiny-x2"),
      "--backend", "cpu", in, outp, NULL);
  g_assert_cmpint (rc, ==, 0);
  g_assert_true (ehat_png_read (outp, &res, &w, &h, &error));
  g_assert_cmpint (w, ==, 42);
  g_assert_cmpint (h, ==, 26);
  g_free (res);
  g_clear_pointer (&out, g_free);
  g_clear_pointer (&err, g_free);

  /* --tile-size with --tile-height: what the library gives for 8×16 tiles
   * (not the square 8×8 ones), byte for byte */
  {
    g_autoptr (EhatModel) m = ehat_model_load (golden_model ("hat-tiny-x2"),
        &error);
    EhatEngineOptions eo = EHAT_ENGINE_OPTIONS_INIT;
    g_autoptr (EhatEngine) e = NULL;
    EhatTileOptions to = EHAT_TILE_OPTIONS_INIT;
    EhatTileStats st;
    g_autofree float *pin = ehat_rgb8_to_planar (rgb, 21, 13);
    g_autofree float *pout = g_new (float, 3 * 42 * 26);
    g_autofree guint8 *want = NULL;

    g_assert_no_error (error);
    eo.backend = EHAT_BACKEND_CPU;
    e = ehat_engine_new (m, &eo, &error);
    g_assert_no_error (error);
    to.tile_size = 8;
    to.tile_height = 16;
    to.overlap = 0;
    g_assert_true (ehat_upscale_tiled (e, pin, 21, 13, pout, &to, &st,
            &error));
    g_assert_no_error (error);
    g_assert_cmpint (st.tile_height, ==, 13);
    g_assert_cmpint (st.tiles_y, ==, 1);
    want = ehat_planar_to_rgb8 (pout, 42, 26);
    rc = run_cli (&out, &err, "upscale", "--model",
        golden_model ("hat-tiny-x2"), "--backend", "cpu", "--tile-size", "8",
        "--tile-height", "16", "--tile-overlap", "0", in, outp, NULL);
    g_assert_cmpint (rc, ==, 0);
    g_assert_true (ehat_png_read (outp, &res, &w, &h, &error));
    g_assert_cmpint (memcmp (res, want, 3 * 42 * 26), ==, 0);
    g_free (res);
    g_clear_pointer (&out, g_free);
    g_clear_pointer (&err, g_free);
  }

  /* short of memory (fault injection: allocations above a limit fail, set
   * between a 48×48 tile's pass and the whole 64×48 image's, above the
   * largest weights, the Winograd upsampling convolution's 2.4 MB): the
   * image still comes out, and stderr says how */
  {
    g_autofree guint8 *big = g_new (guint8, 3 * 64 * 48);
    g_autoptr (EhatModel) m = ehat_model_load (golden_model ("hat-tiny-x2"),
        &error);
    g_autoptr (EhatEngine) e = NULL;
    EhatEngineOptions eo = EHAT_ENGINE_OPTIONS_INIT;
    g_autofree char *limit = NULL;

    g_assert_no_error (error);
    eo.backend = EHAT_BACKEND_CPU;
    e = ehat_engine_new (m, &eo, &error);
    g_assert_no_error (error);
    limit = g_strdup_printf ("%" G_GSIZE_FORMAT,
        ehat_engine_estimate_bytes (e, 1, 48, 48) + 4096);
    g_assert_cmpuint (ehat_engine_estimate_bytes (e, 1, 64, 48), >,
        ehat_engine_estimate_bytes (e, 1, 48, 48) + 4096);
    for (int i = 0; i < 3 * 64 * 48; i++)
      big[i] = (guint8) (i * 37 % 251);
    g_assert_true (ehat_png_write (in, big, 64, 48, &error));
    g_setenv ("EHAT_FAULT_ALLOC_LIMIT", limit, TRUE);
    rc = run_cli (&out, &err, "upscale", "--model",
        golden_model ("hat-tiny-x2"), "--backend", "cpu", in, outp, NULL);
    g_unsetenv ("EHAT_FAULT_ALLOC_LIMIT");
    g_assert_cmpint (rc, ==, 0);
    g_assert_nonnull (strstr (err, "out of memory at the planned tiles"));
    g_assert_true (ehat_png_read (outp, &res, &w, &h, &error));
    g_assert_cmpint (w, ==, 128);
    g_assert_cmpint (h, ==, 96);
    g_free (res);
  }
  g_unlink (in);
  g_unlink (outp);
  g_rmdir (tmp);
}

static void
test_bench_json (void)
{
  g_autofree char *out = NULL, *err = NULL;
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GError) error = NULL;
  JsonObject *o;
  int rc = run_cli (&out, &err, "bench", "--model",
      golden_model ("hat-tiny-x2"), "--size", "24x16", "--repeat", "2",
      "--backend", "cpu", "--json", NULL);

  g_assert_cmpint (rc, ==, 0);
  g_assert_true (json_parser_load_from_data (parser, out, -1, &error));
  o = json_node_get_object (json_parser_get_root (parser));
  g_assert_cmpfloat (json_object_get_double_member (o, "median_ms"), >, 0.0);
  g_assert_cmpfloat (json_object_get_double_member (o, "gflops"), >, 0.0);
  g_assert_cmpint (json_object_get_int_member (o, "peak_rss_bytes"), >, 0);
  g_assert_cmpint (json_object_get_int_member (o, "width"), ==, 24);
  /* every timed run, in run order; no device memory on the CPU */
  g_assert_cmpuint (json_array_get_length (json_object_get_array_member (o,
              "times_ms")), ==, 2);
  g_assert_cmpfloat (json_array_get_double_element
      (json_object_get_array_member (o, "times_ms"), 0), >, 0.0);
  g_assert_true (json_object_get_null_member (o, "device_peak_bytes"));
  g_assert_true (json_object_get_null_member (o, "device_weights_bytes"));
  g_assert_true (json_object_get_null_member (o, "frame"));
}

/* --frame: whole video frames in and out (the colour conversion timed),
 * odd sizes and a 10-bit format included; the JSON names the format. */
static void
test_bench_frame (void)
{
  static const char *const cases[][2] = {
    {"I420", "23x17"}, {"p010_10le", "16x9"}, {"BGRx", "5x3"},
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *out = NULL, *err = NULL;
    g_autoptr (JsonParser) parser = json_parser_new ();
    g_autoptr (GError) error = NULL;
    JsonObject *o;
    int rc = run_cli (&out, &err, "bench", "--model",
        golden_model ("hat-tiny-x2"), "--size", cases[i][1], "--frame",
        cases[i][0], "--repeat", "1", "--backend", "cpu", "--json", NULL);

    if (rc != 0)
      g_error ("bench --frame %s: %s", cases[i][0], err);
    g_assert_true (json_parser_load_from_data (parser, out, -1, &error));
    o = json_node_get_object (json_parser_get_root (parser));
    g_assert_cmpstr (json_object_get_string_member (o, "frame"), ==,
        g_ascii_strcasecmp (cases[i][0], "p010_10le") ? cases[i][0]
        : "P010_10LE");
    g_assert_cmpfloat (json_object_get_double_member (o, "median_ms"), >,
        0.0);
  }
}

static void
test_errors (void)
{
  g_autofree char *tmp = g_dir_make_tmp ("ehat-cli-XXXXXX", NULL);
  g_autofree char *bad = g_build_filename (tmp, "bad.safetensors", NULL);
  struct
  {
    const char *args[8];
    const char *needle;
  } cases[] = {
    {{"info", "/nonexistent/model.safetensors"}, "nonexistent"},
    {{"info", bad}, "bad.safetensors"},
    {{"run", "--model", golden_model ("hat-tiny-x2")}, "--input"},
    {{"bench", "--model", golden_model ("hat-tiny-x2"), "--size", "0x5"},
        "--size"},
    {{"bench", "--model", golden_model ("hat-tiny-x2"), "--backend",
            "quantum"}, "quantum"},
    {{"bench", "--model", golden_model ("hat-tiny-x2"), "--frame",
            "Y41B"}, "--frame"},
    {{"bench", "--model", golden_model ("hat-tiny-x2"), "--frame",
            "I420", "--batch", "2"}, "--frame"},
    {{"frobnicate"}, "usage"},
  };

  g_assert_true (g_file_set_contents (bad, "\x10\0\0\0\0\0\0\0{\"a\":", 13,
          NULL));
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *out = NULL, *err = NULL;
    const char **a = cases[i].args;
    int rc = run_cli (&out, &err, a[0], a[1], a[2], a[3], a[4], a[5], a[6],
        a[7], NULL);
    g_assert_cmpint (rc, !=, 0);
    g_assert_cmpint (rc, <, 128);       /* an exit, not a signal */
    if (!strstr (err, cases[i].needle))
      g_error ("case %u: '%s' not in: %s", i, cases[i].needle, err);
  }
  g_unlink (bad);
  g_rmdir (tmp);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/cli/info", test_info);
  g_test_add_func ("/cli/upscale-png", test_upscale_png);
  g_test_add_func ("/cli/bench-json", test_bench_json);
  g_test_add_func ("/cli/bench-frame", test_bench_frame);
  g_test_add_func ("/cli/errors", test_errors);
  return g_test_run ();
}
