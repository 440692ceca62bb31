/* ehat — command-line front end of libehat.
 *
 *   ehat info MODEL
 *   ehat run --model M --input LR.safetensors --output SR.safetensors [-e N]
 *   ehat upscale --model M IN.png OUT.png [--ensemble N]
 *   ehat bench --model M --size WxH [--frame FORMAT] [--json]
 */
#include "ehat.h"
#include "ehat-png.h"
#include "ehat-safetensors.h"
#include "ehat-tiler.h"

#include <json-glib/json-glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static char *opt_model;
static char *opt_backend = NULL;
static char *opt_precision = NULL;
static int opt_threads;
static int opt_device;
static int opt_ensemble = 1;

/* run and upscale: the self-ensemble (ehat-tiler.h) */
#define ENSEMBLE_ENTRY \
  {"ensemble", 'e', 0, G_OPTION_ARG_INT, &opt_ensemble, \
      "Self-ensemble: the mean over 1 (off), 2, 4 or 8 flipped and " \
      "transposed copies; costs as many passes", "N"}

static GOptionEntry common_entries[] = {
  {"model", 'm', 0, G_OPTION_ARG_FILENAME, &opt_model, "Model file", "M"},
  {"backend", 'b', 0, G_OPTION_ARG_STRING, &opt_backend,
      "auto, cpu or cuda (default auto)", "B"},
  {"precision", 'p', 0, G_OPTION_ARG_STRING, &opt_precision,
      "auto, fp32, tf32, fp16 or bf16", "P"},
  {"threads", 't', 0, G_OPTION_ARG_INT, &opt_threads,
      "CPU threads (0 = all cores)", "N"},
  {"device", 'd', 0, G_OPTION_ARG_INT, &opt_device, "CUDA device", "ID"},
  {NULL}
};

static gboolean
parse_options (EhatEngineOptions *o, GError **error)
{
  static const char *backends[] = { "auto", "cpu", "cuda", NULL };
  static const EhatBackendKind bk[] = { EHAT_BACKEND_AUTO, EHAT_BACKEND_CPU,
    EHAT_BACKEND_CUDA
  };
  int i;

  *o = (EhatEngineOptions) EHAT_ENGINE_OPTIONS_INIT;
  for (i = 0; opt_backend && backends[i]; i++)
    if (g_str_equal (opt_backend, backends[i]))
      break;
  if (opt_backend && !backends[i]) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "unknown backend '%s' (auto, cpu, cuda)", opt_backend);
    return FALSE;
  }
  o->backend = opt_backend ? bk[i] : EHAT_BACKEND_AUTO;
  /* the names are libehat's (ehat_precision_name), for every precision */
  for (i = EHAT_PRECISION_AUTO; opt_precision && i <= EHAT_PRECISION_BF16;
      i++)
    if (g_str_equal (opt_precision, ehat_precision_name ((EhatPrecision) i)))
      break;
  if (opt_precision && i > EHAT_PRECISION_BF16) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "unknown precision '%s'", opt_precision);
    return FALSE;
  }
  o->precision = opt_precision ? (EhatPrecision) i : EHAT_PRECISION_AUTO;
  o->n_threads = opt_threads;
  o->device_id = opt_device;
  return TRUE;
}

static EhatEngine *
open_engine (GError **error)
{
  g_autoptr (EhatModel) model = NULL;
  EhatEngineOptions o;
  EhatEngine *e;

  if (!opt_model) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "--model is required");
    return NULL;
  }
  if (!parse_options (&o, error))
    return NULL;
  model = ehat_model_load (opt_model, error);
  if (!model)
    return NULL;
  e = ehat_engine_new (model, &o, error);
  if (e && ehat_engine_get_fallback_reason (e))
    g_printerr ("ehat: %s\n", ehat_engine_get_fallback_reason (e));
  return e;
}

static GOptionContext *
make_context (const char *params, const char *summary, GOptionEntry *extra)
{
  GOptionContext *ctx = g_option_context_new (params);
  g_option_context_set_summary (ctx, summary);
  g_option_context_add_main_entries (ctx, common_entries, NULL);
  if (extra)
    g_option_context_add_main_entries (ctx, extra, NULL);
  return ctx;
}

/* ---- info ---- */

static char *
int_list (const int *v, int n)
{
  GString *s = g_string_new ("[");
  for (int i = 0; i < n; i++)
    g_string_append_printf (s, "%s%d", i ? ", " : "", v[i]);
  g_string_append_c (s, ']');
  return g_string_free (s, FALSE);
}

static int
cmd_info (int argc, char **argv, GError **error)
{
  g_autoptr (GOptionContext) ctx = make_context ("MODEL",
      "Shows a model's configuration and cost.", NULL);
  g_autoptr (EhatModel) model = NULL;
  g_autofree const char **keys = NULL;
  g_autofree char *depths = NULL, *heads = NULL;
  const EhatConfig *c;

  if (!g_option_context_parse (ctx, &argc, &argv, error))
    return 2;
  if (argc != 2 && !opt_model) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "usage: ehat info MODEL");
    return 2;
  }
  model = ehat_model_load (argc == 2 ? argv[1] : opt_model, error);
  if (!model)
    return 1;
  c = ehat_model_get_config (model);
  depths = int_list (c->depths, c->n_groups);
  heads = int_list (c->num_heads, c->n_groups);
  g_print ("architecture     %s%s\n",
      c->arch == EHAT_ARCH_EHAT ? "EHAT" : "HAT", c->danet ? " + DANet" : "");
  g_print ("upscale          x%d\n", c->upscale);
  g_print ("embed_dim        %d\n", c->embed_dim);
  g_print ("depths           %s\n", depths);
  g_print ("num_heads        %s\n", heads);
  g_print ("window_size      %d (overlap window %d)\n", c->window_size,
      c->overlap_window);
  g_print ("compress/squeeze %d / %d\n", c->compress_ratio,
      c->squeeze_factor);
  g_print ("conv_scale       %g\n", c->conv_scale);
  g_print ("mlp_ratio        %g\n", c->mlp_ratio);
  if (c->ape)
    g_print ("position embed.  %dx%d (passes padded to it; larger frames "
        "run in %dx%d tiles)\n", c->ape_size, c->ape_size, c->ape_size,
        c->ape_size);
  g_print ("img_range        %g\n", c->img_range);
  g_print ("rgb_mean         [%g, %g, %g]\n", c->rgb_mean[0], c->rgb_mean[1],
      c->rgb_mean[2]);
  g_print ("parameters       %" G_GUINT64_FORMAT " (%.2f M)\n",
      ehat_model_get_n_params (model),
      ehat_model_get_n_params (model) / 1e6);
  g_print ("multiply-adds    %.2f M per LR pixel (256x256 input)\n",
      ehat_model_get_macs_per_pixel (model, 256, 256) / 1e6);
  keys = ehat_model_list_metadata (model);
  g_print ("metadata\n");
  for (int i = 0; keys && keys[i]; i++)
    g_print ("  %-15s %s\n", keys[i], ehat_model_get_metadata (model,
            keys[i]));
  return 0;
}

/* ---- run ---- */

static int
cmd_run (int argc, char **argv, GError **error)
{
  static char *input, *output;
  static GOptionEntry entries[] = {
    {"input", 'i', 0, G_OPTION_ARG_FILENAME, &input,
        "LR tensor file (tensor 'image' [1,3,H,W] float)", "LR"},
    {"output", 'o', 0, G_OPTION_ARG_FILENAME, &output,
        "SR tensor file to write", "SR"},
    ENSEMBLE_ENTRY,
    {NULL}
  };
  g_autoptr (GOptionContext) ctx = make_context ("",
      "Runs the reference pipeline on a tensor (the golden-data format).",
      entries);
  g_autoptr (EhatSafetensors) st = NULL;
  g_autoptr (EhatEngine) engine = NULL;
  g_autofree float *in = NULL, *out = NULL;
  const EhatStTensor *t;
  int n, h, w, s;

  if (!g_option_context_parse (ctx, &argc, &argv, error))
    return 2;
  if (!input || !output) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "--input and --output are required");
    return 2;
  }
  st = ehat_safetensors_open (input, error);
  if (!st)
    return 1;
  t = ehat_safetensors_find (st, "image");
  if (!t || t->ndim != 4 || t->shape[1] != 3 || !ehat_dtype_is_float (t->dtype)
      || t->shape[0] < 1 || t->shape[2] < 1 || t->shape[3] < 1
      || t->shape[2] > 65536 || t->shape[3] > 65536 || t->shape[0] > 4096) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_TENSOR,
        "%s: needs a float tensor 'image' of shape [N,3,H,W]", input);
    return 1;
  }
  n = (int) t->shape[0];
  h = (int) t->shape[2];
  w = (int) t->shape[3];
  in = g_try_new (float, t->numel);
  if (!in) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY,
        "out of memory");
    return 1;
  }
  ehat_st_tensor_to_f32 (t, in);

  engine = open_engine (error);
  if (!engine)
    return 1;
  s = ehat_model_get_config (ehat_engine_get_model (engine))->upscale;
  out = g_try_new (float, (gsize) n * 3 * h * s * w * s);
  if (!out) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY,
        "out of memory");
    return 1;
  }
  if (!ehat_engine_process_ensemble (engine, in, n, w, h, opt_ensemble, out,
          error))
    return 1;
  {
    const char *names[] = { "image" };
    gint64 shape[] = { n, 3, (gint64) h * s, (gint64) w * s };
    const gint64 *shapes[] = { shape };
    const int ndims[] = { 4 };
    const float *data[] = { out };
    if (!ehat_safetensors_write_f32 (output, NULL, 1, names, ndims, shapes,
            data, error))
      return 1;
  }
  return 0;
}

/* ---- upscale ---- */

static int
cmd_upscale (int argc, char **argv, GError **error)
{
  static int tile_size = 0, tile_height = 0, tile_overlap = -1;
  static GOptionEntry entries[] = {
    {"tile-size", 0, 0, G_OPTION_ARG_INT, &tile_size,
        "Tile size in LR pixels (0 = automatic)", "T"},
    {"tile-height", 0, 0, G_OPTION_ARG_INT, &tile_height,
        "Tile height in LR pixels when not square (0 = the tile size)", "H"},
    {"tile-overlap", 0, 0, G_OPTION_ARG_INT, &tile_overlap,
        "Tile overlap in LR pixels (-1 = default)", "O"},
    ENSEMBLE_ENTRY,
    {NULL}
  };
  g_autoptr (GOptionContext) ctx = make_context ("IN.png OUT.png",
      "Upscales an 8-bit PNG image.", entries);
  g_autoptr (EhatEngine) engine = NULL;
  g_autofree guint8 *rgb = NULL, *rgb_out = NULL;
  g_autofree float *in = NULL, *out = NULL;
  EhatTileOptions topt = EHAT_TILE_OPTIONS_INIT;
  EhatTileStats st = { 0, };
  int w, h, s;

  if (!g_option_context_parse (ctx, &argc, &argv, error))
    return 2;
  if (argc != 3) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "usage: ehat upscale --model M IN.png OUT.png");
    return 2;
  }
  if (!ehat_png_read (argv[1], &rgb, &w, &h, error))
    return 1;
  engine = open_engine (error);
  if (!engine)
    return 1;
  s = ehat_model_get_config (ehat_engine_get_model (engine))->upscale;
  in = ehat_rgb8_to_planar (rgb, w, h);
  out = g_try_new (float, (gsize) 3 * w * s * h * s);
  if (!out) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY,
        "out of memory");
    return 1;
  }
  topt.tile_size = tile_size;
  topt.tile_height = tile_height;
  topt.ensemble = opt_ensemble;
  if (tile_overlap >= 0)
    topt.overlap = tile_overlap;
  if (!ehat_upscale_tiled (engine, in, w, h, out, &topt, &st, error))
    return 1;
  if (st.retries > 0)
    g_printerr ("ehat: out of memory at the planned tiles; went through "
        "in %d tiles of %dx%d after %d retries\n", st.n_tiles,
        st.tile_width, st.tile_height, st.retries);
  rgb_out = ehat_planar_to_rgb8 (out, w * s, h * s);
  return ehat_png_write (argv[2], rgb_out, w * s, h * s, error) ? 0 : 1;
}

/* ---- bench ---- */

static int
cmp_double (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return x < y ? -1 : x > y;
}

/* A frame of random bytes (bench --frame). */
static gboolean
bench_frame (EhatFrame *f, EhatPixelFormat format, int w, int h,
    GRand *rand)
{
  f->format = format;
  f->width = w;
  f->height = h;
  for (int p = 0; p < ehat_pixel_format_n_planes (format); p++) {
    int stride, rows;
    gsize n;

    ehat_frame_plane_size (format, w, h, p, &stride, &rows);
    n = (gsize) stride * rows;
    f->stride[p] = stride;
    if (!(f->data[p] = g_try_malloc (n)))
      return FALSE;
    for (gsize i = 0; i < n; i++)
      f->data[p][i] = (guint8) g_rand_int (rand);
  }
  return TRUE;
}

static int
cmd_bench (int argc, char **argv, GError **error)
{
  static char *size = NULL, *frame_format = NULL;
  static int warmup = 1, repeat = 5, batch = 1;
  static gboolean json = FALSE;
  static GOptionEntry entries[] = {
    {"size", 's', 0, G_OPTION_ARG_STRING, &size, "Input size (LR)", "WxH"},
    {"frame", 'f', 0, G_OPTION_ARG_STRING, &frame_format,
        "Time video frames of this format in and out (ehat_upscale_frame: "
          "colour conversion included, on the GPU where it can be), e.g. "
          "I420", "FORMAT"},
    {"batch", 'n', 0, G_OPTION_ARG_INT, &batch, "Images per call", "N"},
    {"warmup", 0, 0, G_OPTION_ARG_INT, &warmup, "Untimed runs first", "N"},
    {"repeat", 'r', 0, G_OPTION_ARG_INT, &repeat, "Timed runs", "N"},
    {"json", 0, 0, G_OPTION_ARG_NONE, &json, "Machine-readable output", NULL},
    {NULL}
  };
  g_autoptr (GOptionContext) ctx = make_context ("",
      "Times the network on random input (median of repeated runs).",
      entries);
  g_autoptr (EhatEngine) engine = NULL;
  g_autofree float *in = NULL, *out = NULL;
  g_autofree double *times = NULL, *runs = NULL;
  EhatFrame fin = { 0, }, fout = { 0, };
  int fmt = -1;
  g_autoptr (GRand) rand = g_rand_new_with_seed (1);
  struct rusage ru;
  int w = 64, h = 64, s;
  double median, macs, mp, gflops;
  gsize n_in, dev_weights = 0, dev_peak = 0;
  gboolean on_device;

  if (!g_option_context_parse (ctx, &argc, &argv, error))
    return 2;
  if (size && (sscanf (size, "%dx%d", &w, &h) != 2 || w < 1 || h < 1)) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "--size must be WxH, e.g. 64x64");
    return 2;
  }
  if (repeat < 1 || warmup < 0 || batch < 1) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "--repeat and --batch must be ≥ 1, --warmup ≥ 0");
    return 2;
  }
  if (frame_format) {
    for (fmt = 0; fmt < EHAT_PIXEL_N_FORMATS; fmt++)
      if (!g_ascii_strcasecmp (frame_format,
              ehat_pixel_format_to_string ((EhatPixelFormat) fmt)))
        break;
    if (fmt == EHAT_PIXEL_N_FORMATS || batch != 1) {
      g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
          "--frame takes a pixel format of ehat-frame.h (I420, NV12, RGB, "
          "…) and one image per call");
      return 2;
    }
  }
  engine = open_engine (error);
  if (!engine)
    return 1;
  s = ehat_model_get_config (ehat_engine_get_model (engine))->upscale;
  if (fmt >= 0 && !(bench_frame (&fin, (EhatPixelFormat) fmt, w, h, rand)
          && bench_frame (&fout, (EhatPixelFormat) fmt, w * s, h * s,
              rand))) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY,
        "out of memory");
    return 1;
  }
  n_in = (gsize) batch * 3 * w * h;
  in = g_try_new (float, n_in);
  out = g_try_new (float, n_in * s * s);
  if (!in || !out) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY,
        "out of memory");
    return 1;
  }
  for (gsize i = 0; i < n_in; i++)
    in[i] = (float) g_rand_double (rand);
  times = g_new (double, repeat);
  runs = g_new (double, repeat);
  for (int i = 0; i < warmup + repeat; i++) {
    gint64 t0 = g_get_monotonic_time ();
    if (fmt >= 0 ? !ehat_upscale_frame (engine, &fin, NULL, &fout, NULL,
            NULL, NULL, error)
        : !ehat_engine_process (engine, in, batch, w, h, out, error))
      return 1;
    if (i >= warmup)
      times[i - warmup] = (g_get_monotonic_time () - t0) / 1000.0;
  }
  /* in run order for the JSON (benchmarks combine runs of several
   * invocations), sorted for the statistics */
  memcpy (runs, times, sizeof (double) * repeat);
  qsort (times, repeat, sizeof (double), cmp_double);
  median = repeat % 2 ? times[repeat / 2]
      : 0.5 * (times[repeat / 2 - 1] + times[repeat / 2]);
  getrusage (RUSAGE_SELF, &ru);
  on_device = ehat_engine_get_device_memory (engine, &dev_weights, NULL,
      &dev_peak);
  macs = ehat_model_get_macs_per_pixel (ehat_engine_get_model (engine), w, h)
      * w * h * batch;
  mp = (double) w * h * batch / 1e6 / (median / 1000.0);
  gflops = 2.0 * macs / 1e9 / (median / 1000.0);

  if (json) {
    g_autoptr (JsonBuilder) b = json_builder_new ();
    g_autoptr (JsonGenerator) gen = json_generator_new ();
    g_autoptr (JsonNode) root = NULL;
    g_autofree char *text = NULL;

    json_builder_begin_object (b);
    json_builder_set_member_name (b, "model");
    json_builder_add_string_value (b, opt_model);
    json_builder_set_member_name (b, "backend");
    json_builder_add_string_value (b, ehat_engine_describe (engine));
    /* the precision that ran: bf16 asked for on a CPU without AVX512-BF16
     * runs fp32, and says why */
    json_builder_set_member_name (b, "precision");
    json_builder_add_string_value (b,
        ehat_precision_name (ehat_engine_get_precision (engine)));
    json_builder_set_member_name (b, "fallback_reason");
    if (ehat_engine_get_fallback_reason (engine))
      json_builder_add_string_value (b,
          ehat_engine_get_fallback_reason (engine));
    else
      json_builder_add_null_value (b);
    json_builder_set_member_name (b, "width");
    json_builder_add_int_value (b, w);
    json_builder_set_member_name (b, "height");
    json_builder_add_int_value (b, h);
    json_builder_set_member_name (b, "batch");
    json_builder_add_int_value (b, batch);
    /* frames in and out (colour conversion timed), or float planes */
    json_builder_set_member_name (b, "frame");
    if (fmt >= 0)
      json_builder_add_string_value (b,
          ehat_pixel_format_to_string ((EhatPixelFormat) fmt));
    else
      json_builder_add_null_value (b);
    json_builder_set_member_name (b, "repeat");
    json_builder_add_int_value (b, repeat);
    json_builder_set_member_name (b, "median_ms");
    json_builder_add_double_value (b, median);
    json_builder_set_member_name (b, "min_ms");
    json_builder_add_double_value (b, times[0]);
    json_builder_set_member_name (b, "max_ms");
    json_builder_add_double_value (b, times[repeat - 1]);
    json_builder_set_member_name (b, "times_ms");
    json_builder_begin_array (b);
    for (int i = 0; i < repeat; i++)
      json_builder_add_double_value (b, runs[i]);
    json_builder_end_array (b);
    json_builder_set_member_name (b, "mp_per_s");
    json_builder_add_double_value (b, mp);
    json_builder_set_member_name (b, "gmacs");
    json_builder_add_double_value (b, macs / 1e9);
    json_builder_set_member_name (b, "gflops");
    json_builder_add_double_value (b, gflops);
    json_builder_set_member_name (b, "peak_rss_bytes");
    json_builder_add_int_value (b, (gint64) ru.ru_maxrss * 1024);
    json_builder_set_member_name (b, "workspace_bytes");
    json_builder_add_int_value (b, ehat_engine_get_peak_workspace (engine));
    /* a GPU backend's own device memory: after the weights were loaded,
     * and its peak over the runs (weights + activations + scratch) */
    json_builder_set_member_name (b, "device_weights_bytes");
    if (on_device)
      json_builder_add_int_value (b, dev_weights);
    else
      json_builder_add_null_value (b);
    json_builder_set_member_name (b, "device_peak_bytes");
    if (on_device)
      json_builder_add_int_value (b, dev_peak);
    else
      json_builder_add_null_value (b);
    json_builder_end_object (b);
    root = json_builder_get_root (b);
    json_generator_set_root (gen, root);
    json_generator_set_pretty (gen, TRUE);
    text = json_generator_to_data (gen, NULL);
    g_print ("%s\n", text);
  } else {
    g_print ("backend     %s\n", ehat_engine_describe (engine));
    g_print ("precision   %s\n",
        ehat_precision_name (ehat_engine_get_precision (engine)));
    g_print ("input       %d x %dx%d -> x%d%s%s\n", batch, w, h, s,
        fmt >= 0 ? ", frames of " : "",
        fmt >= 0 ? ehat_pixel_format_to_string ((EhatPixelFormat) fmt) : "");
    g_print ("median      %.2f ms (min %.2f, max %.2f, %d runs)\n", median,
        times[0], times[repeat - 1], repeat);
    g_print ("throughput  %.4f MP/s (LR), %.1f GFLOP/s\n", mp, gflops);
    g_print ("memory      peak RSS %.1f MiB, workspace %.1f MiB\n",
        ru.ru_maxrss / 1024.0,
        ehat_engine_get_peak_workspace (engine) / 1048576.0);
    if (on_device) {
      gsize act = ehat_engine_get_peak_workspace (engine);
      /* the issue's bound is weights + activations: say what is beyond */
      double extra = (double) dev_peak - (double) dev_weights - (double) act;

      g_print ("device      %.1f MiB after loading, peak %.1f MiB (%.1f MiB "
          "beyond weights and workspace, %.1f %% of the workspace)\n",
          dev_weights / 1048576.0, dev_peak / 1048576.0, extra / 1048576.0,
          act ? 100.0 * extra / (double) act : 0.0);
    }
  }
  for (int p = 0; p < EHAT_FRAME_MAX_PLANES; p++) {
    g_free (fin.data[p]);
    g_free (fout.data[p]);
  }
  return 0;
}

static void
usage (void)
{
  g_printerr ("usage: ehat COMMAND [OPTIONS]\n\n"
      "commands:\n"
      "  info MODEL            configuration, parameters, cost\n"
      "  run                   reference pipeline on a tensor file\n"
      "  upscale IN.png OUT.png\n"
      "  bench                 timing\n\n"
      "'ehat COMMAND --help' for its options.\n");
}

int
main (int argc, char **argv)
{
  g_autoptr (GError) error = NULL;
  int rc;

  if (argc < 2 || g_str_equal (argv[1], "--help")
      || g_str_equal (argv[1], "-h")) {
    usage ();
    return argc < 2 ? 2 : 0;
  }
  /* The subcommand parses the remaining arguments with its own context. */
  argv[1] = g_strconcat ("ehat ", argv[1], NULL);
  if (g_str_equal (argv[1], "ehat info"))
    rc = cmd_info (argc - 1, argv + 1, &error);
  else if (g_str_equal (argv[1], "ehat run"))
    rc = cmd_run (argc - 1, argv + 1, &error);
  else if (g_str_equal (argv[1], "ehat upscale"))
    rc = cmd_upscale (argc - 1, argv + 1, &error);
  else if (g_str_equal (argv[1], "ehat bench"))
    rc = cmd_bench (argc - 1, argv + 1, &error);
  else {
    usage ();
    rc = 2;
  }
  g_free (argv[1]);
  if (error)
    g_printerr ("ehat: %s\n", error->message);
  return rc;
}
