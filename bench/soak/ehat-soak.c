/* Soak benchmark (issue 9, item 3): many small frames through a real
 * `ehatsr` pipeline, resident memory sampled from inside, growth after
 * warm-up fitted and checked.
 *
 *   videotestsrc pattern=ball num-buffers=N ! video/x-raw,format=RGB,
 *       width=W,height=H ! ehatsr model=M backend=B ! fakesink sync=false
 *
 * A pad probe on the fakesink's sink pad samples VmRSS (/proc/self/status,
 * read with open/read into a stack buffer: the sampler allocates nothing)
 * every --every frames, and — with --backend cuda — the device memory of
 * this process (nvidia-smi --query-compute-apps, see sample_device()).
 * Frames are counted on ehatsr's sink pad (in) and on the fakesink (out);
 * error, warning and QoS messages are counted on the bus.
 *
 * Output: the curve as CSV (frame, seconds, rss_kib[, device_mib]) and a
 * summary (key=value lines, also as JSON with --json): frames in/out,
 * frames/s, RSS after warm-up, the least-squares slope of RSS over the
 * frames after warm-up (bytes/frame and KiB per 1000 frames), the means of
 * the first and last decile of those samples, and PASS/FAIL.
 *
 * Pass criterion ("zero within noise", justified in docs/reliability.md):
 *   frames out = frames in = N, no error message, and
 *   fitted growth over the post-warm-up span ≤ max (slope_limit × span,
 *   noise_floor) — slope_limit 1 KiB per 1000 frames, noise floor 64 KiB
 *   (16 pages), and
 *   last-decile mean ≤ first-decile mean + 1 MiB.
 * The device criterion (cuda) is the same with the device numbers and a
 * 2 MiB decile allowance (one CUDA allocation granule; nvidia-smi reports
 * whole MiB).
 *
 * Build: meson builds it as <build>/tests/ehat-soak (with the gst tests);
 * bench/soak/soak.sh runs it with the right environment.
 */
#include <gst/gst.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct
{
  guint64 frame;
  double t;
  gint64 rss_kib;
  gint64 dev_mib;               /* -1: not sampled */
} Sample;

typedef struct
{
  /* options */
  gint frames, width, height, every;
  gdouble warmup_frac;
  gchar *model, *backend, *format, *csv, *json;
  gdouble max_slope_kib_per_1000;       /* KiB per 1000 frames */
  gdouble noise_floor_kib;
  gdouble max_decile_growth_mib;
  gdouble max_dev_decile_growth_mib;
  gboolean quiet;

  /* run */
  GMainLoop *loop;
  gint64 t0;
  guint64 in_frames, out_frames;
  guint errors, warnings, qos_msgs;
  guint64 qos_dropped;
  gchar *first_error;
  GArray *samples;
  gboolean sample_device;
} Soak;

/* VmRSS in KiB, without allocating. */
static gint64
read_rss_kib (void)
{
  char buf[4096];
  ssize_t n;
  int fd = open ("/proc/self/status", O_RDONLY | O_CLOEXEC);
  char *p;

  if (fd < 0)
    return -1;
  n = read (fd, buf, sizeof (buf) - 1);
  close (fd);
  if (n <= 0)
    return -1;
  buf[n] = '\0';
  p = strstr (buf, "VmRSS:");
  if (!p)
    return -1;
  return g_ascii_strtoll (p + 6, NULL, 10);
}

/* Device memory of this process in MiB, from nvidia-smi (which counts the
 * context, the allocator's pool and every cudaMalloc).  -1 when unknown.
 * NOT RUN on the development machine (no GPU); see docs/reliability.md. */
static gint64
sample_device (void)
{
  gchar *out = NULL;
  gchar **lines, **l;
  gint64 mib = -1;
  pid_t self = getpid ();
  const gchar *argv[] = { "nvidia-smi",
    "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits",
    NULL
  };

  if (!g_spawn_sync (NULL, (gchar **) argv, NULL, G_SPAWN_SEARCH_PATH |
          G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL, &out, NULL, NULL, NULL))
    return -1;
  lines = g_strsplit (out, "\n", -1);
  for (l = lines; *l; l++) {
    gint64 pid, used;

    if (sscanf (*l, "%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT, &pid,
            &used) == 2 && pid == self)
      mib = (mib < 0 ? 0 : mib) + used;
  }
  g_strfreev (lines);
  g_free (out);
  return mib;
}

static void
take_sample (Soak * s, guint64 frame)
{
  Sample smp;

  smp.frame = frame;
  smp.t = (g_get_monotonic_time () - s->t0) / 1e6;
  smp.rss_kib = read_rss_kib ();
  smp.dev_mib = s->sample_device ? sample_device () : -1;
  g_array_append_val (s->samples, smp);
}

static GstPadProbeReturn
in_probe (GstPad * pad, GstPadProbeInfo * info, gpointer user_data)
{
  Soak *s = user_data;

  s->in_frames++;
  return GST_PAD_PROBE_OK;
}

/* Streaming thread of the sink: the frame just produced is still alive,
 * so every sample sees the same set of live buffers. */
static GstPadProbeReturn
out_probe (GstPad * pad, GstPadProbeInfo * info, gpointer user_data)
{
  Soak *s = user_data;

  s->out_frames++;
  if (s->out_frames == 1 || s->out_frames % s->every == 0
      || s->out_frames == (guint64) s->frames)
    take_sample (s, s->out_frames);
  if (!s->quiet && s->out_frames % (s->every * 20) == 0)
    g_printerr ("  %" G_GUINT64_FORMAT " frames, %.1f s, RSS %" G_GINT64_FORMAT
        " KiB\n", s->out_frames, (g_get_monotonic_time () - s->t0) / 1e6,
        g_array_index (s->samples, Sample, s->samples->len - 1).rss_kib);
  return GST_PAD_PROBE_OK;
}

static gboolean
bus_cb (GstBus * bus, GstMessage * msg, gpointer user_data)
{
  Soak *s = user_data;
  GError *err = NULL;

  switch (GST_MESSAGE_TYPE (msg)) {
    case GST_MESSAGE_ERROR:
      gst_message_parse_error (msg, &err, NULL);
      g_printerr ("ERROR from %s: %s\n", GST_OBJECT_NAME (msg->src),
          err->message);
      if (!s->first_error)
        s->first_error = g_strdup (err->message);
      g_clear_error (&err);
      s->errors++;
      g_main_loop_quit (s->loop);
      break;
    case GST_MESSAGE_WARNING:
      gst_message_parse_warning (msg, &err, NULL);
      g_printerr ("WARNING from %s: %s\n", GST_OBJECT_NAME (msg->src),
          err->message);
      g_clear_error (&err);
      s->warnings++;
      break;
    case GST_MESSAGE_QOS:{
      GstFormat fmt;
      guint64 processed, dropped;

      gst_message_parse_qos_stats (msg, &fmt, &processed, &dropped);
      s->qos_msgs++;
      if (fmt == GST_FORMAT_BUFFERS)
        s->qos_dropped = MAX (s->qos_dropped, dropped);
      break;
    }
    case GST_MESSAGE_EOS:
      g_main_loop_quit (s->loop);
      break;
    default:
      break;
  }
  return TRUE;
}

typedef struct
{
  gdouble slope;                /* units per frame */
  gdouble first_mean, last_mean;
  guint n;
  gdouble span;                 /* frames */
} Fit;

/* Least squares over samples [from, len) of value(); decile means. */
static gboolean
fit_growth (GArray * samples, guint from, gboolean device, gdouble unit,
    Fit * f)
{
  guint n = samples->len - from, i, d;
  gdouble mx = 0, my = 0, sxx = 0, sxy = 0;

  memset (f, 0, sizeof (*f));
  if (n < 10)
    return FALSE;
  for (i = from; i < samples->len; i++) {
    Sample *s = &g_array_index (samples, Sample, i);
    gdouble y = (device ? s->dev_mib : s->rss_kib) * unit;

    mx += s->frame;
    my += y;
  }
  mx /= n;
  my /= n;
  for (i = from; i < samples->len; i++) {
    Sample *s = &g_array_index (samples, Sample, i);
    gdouble y = (device ? s->dev_mib : s->rss_kib) * unit;

    sxx += (s->frame - mx) * (s->frame - mx);
    sxy += (s->frame - mx) * (y - my);
  }
  f->slope = sxx > 0 ? sxy / sxx : 0;
  f->n = n;
  f->span = g_array_index (samples, Sample, samples->len - 1).frame
      - g_array_index (samples, Sample, from).frame;
  d = MAX (n / 10, 1);
  for (i = 0; i < d; i++) {
    Sample *a = &g_array_index (samples, Sample, from + i);
    Sample *b = &g_array_index (samples, Sample, samples->len - d + i);

    f->first_mean += (device ? a->dev_mib : a->rss_kib) * unit / d;
    f->last_mean += (device ? b->dev_mib : b->rss_kib) * unit / d;
  }
  return TRUE;
}

int
main (int argc, char **argv)
{
  Soak s = { 0, };
  GOptionContext *ctx;
  GError *err = NULL;
  GstElement *pipe, *sr, *sink;
  GstPad *pad;
  GstBus *bus;
  gchar *desc;
  guint i, warm_idx;
  Fit rss, dev;
  gboolean ok = TRUE, have_dev = FALSE, fit_ok;
  gdouble secs, growth_limit_kib, growth_kib;
  GString *summary = g_string_new (NULL);
  FILE *f;
  GOptionEntry entries[] = {
    {"frames", 'n', 0, G_OPTION_ARG_INT, &s.frames,
        "Frames to push (default 10000)", "N"},
    {"width", 0, 0, G_OPTION_ARG_INT, &s.width, "Width (32)", "W"},
    {"height", 0, 0, G_OPTION_ARG_INT, &s.height, "Height (24)", "H"},
    {"format", 0, 0, G_OPTION_ARG_STRING, &s.format, "Format (RGB)", "F"},
    {"model", 'm', 0, G_OPTION_ARG_FILENAME, &s.model,
        "Model (default $EHAT_GOLDEN_DIR/hat-tiny-x2/model.safetensors)",
        "PATH"},
    {"backend", 'b', 0, G_OPTION_ARG_STRING, &s.backend,
        "cpu (default), cuda or auto", "B"},
    {"every", 0, 0, G_OPTION_ARG_INT, &s.every,
        "Sample every N frames (default frames/200)", "N"},
    {"warmup", 0, 0, G_OPTION_ARG_DOUBLE, &s.warmup_frac,
        "Warm-up fraction of the frames, not fitted (0.1)", "F"},
    {"csv", 0, 0, G_OPTION_ARG_FILENAME, &s.csv, "Write the curve here",
        "FILE"},
    {"json", 0, 0, G_OPTION_ARG_FILENAME, &s.json,
        "Write the summary here as JSON", "FILE"},
    {"max-slope", 0, 0, G_OPTION_ARG_DOUBLE, &s.max_slope_kib_per_1000,
        "Growth limit in KiB per 1000 frames (1)", "KIB"},
    {"noise-floor", 0, 0, G_OPTION_ARG_DOUBLE, &s.noise_floor_kib,
        "Fitted growth always tolerated, KiB (64)", "KIB"},
    {"max-decile-growth", 0, 0, G_OPTION_ARG_DOUBLE,
          &s.max_decile_growth_mib,
        "Last-decile mean minus first-decile mean limit, MiB (1)", "MIB"},
    {"quiet", 'q', 0, G_OPTION_ARG_NONE, &s.quiet, "No progress lines", NULL},
    {NULL}
  };

#if defined(__SANITIZE_ADDRESS__)
#define EHAT_SOAK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EHAT_SOAK_ASAN 1
#endif
#endif
#ifdef EHAT_SOAK_ASAN
  /* ASan's quarantine keeps freed memory (up to 256 MiB): RSS grows by
   * design, the measurement means nothing.  77 = skipped for meson. */
  g_printerr ("ehat-soak: built with AddressSanitizer, RSS not meaningful; "
      "skipped\n");
  return 77;
#endif
  s.frames = 10000;
  s.width = 32;
  s.height = 24;
  s.warmup_frac = 0.1;
  s.max_slope_kib_per_1000 = 1.0;
  s.noise_floor_kib = 64.0;
  s.max_decile_growth_mib = 1.0;
  s.max_dev_decile_growth_mib = 2.0;

  ctx = g_option_context_new ("- ehatsr soak benchmark");
  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_add_group (ctx, gst_init_get_option_group ());
  if (!g_option_context_parse (ctx, &argc, &argv, &err)) {
    g_printerr ("%s\n", err->message);
    return 2;
  }
  g_option_context_free (ctx);
  if (s.frames < 20 || s.width < 1 || s.height < 1 || s.warmup_frac < 0
      || s.warmup_frac >= 0.9) {
    g_printerr ("invalid arguments\n");
    return 2;
  }
  if (!s.model) {
    const gchar *dir = g_getenv ("EHAT_GOLDEN_DIR");

    if (!dir) {
      g_printerr ("no --model and no EHAT_GOLDEN_DIR\n");
      return 2;
    }
    s.model = g_build_filename (dir, "hat-tiny-x2", "model.safetensors",
        NULL);
  }
  if (!s.backend)
    s.backend = g_strdup ("cpu");
  if (!s.format)
    s.format = g_strdup ("RGB");
  if (s.every <= 0)
    s.every = MAX (s.frames / 200, 1);
  s.sample_device = g_str_equal (s.backend, "cuda");
  s.samples = g_array_new (FALSE, FALSE, sizeof (Sample));

  desc = g_strdup_printf ("videotestsrc pattern=ball num-buffers=%d ! "
      "video/x-raw,format=%s,width=%d,height=%d,framerate=30/1 ! "
      "ehatsr name=sr backend=%s ! fakesink name=sink sync=false",
      s.frames, s.format, s.width, s.height, s.backend);
  pipe = gst_parse_launch_full (desc, NULL, GST_PARSE_FLAG_FATAL_ERRORS,
      &err);
  if (!pipe || err) {
    g_printerr ("pipeline: %s\n", err ? err->message : "?");
    return 2;
  }
  sr = gst_bin_get_by_name (GST_BIN (pipe), "sr");
  sink = gst_bin_get_by_name (GST_BIN (pipe), "sink");
  g_object_set (sr, "model", s.model, NULL);
  pad = gst_element_get_static_pad (sr, "sink");
  gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER, in_probe, &s, NULL);
  gst_object_unref (pad);
  pad = gst_element_get_static_pad (sink, "sink");
  gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER, out_probe, &s, NULL);
  gst_object_unref (pad);

  s.loop = g_main_loop_new (NULL, FALSE);
  bus = gst_element_get_bus (pipe);
  gst_bus_add_watch (bus, bus_cb, &s);
  if (!s.quiet)
    g_printerr ("soak: %s\n  model %s\n", desc, s.model);

  s.t0 = g_get_monotonic_time ();
  take_sample (&s, 0);          /* before PLAYING: the baseline */
  if (gst_element_set_state (pipe, GST_STATE_PLAYING) ==
      GST_STATE_CHANGE_FAILURE)
    s.errors++;
  else
    g_main_loop_run (s.loop);
  secs = (g_get_monotonic_time () - s.t0) / 1e6;
  gst_element_set_state (pipe, GST_STATE_NULL);

  if (s.csv) {
    f = fopen (s.csv, "w");
    if (!f) {
      g_printerr ("%s: %s\n", s.csv, g_strerror (errno));
      return 2;
    }
    fprintf (f, "frame,seconds,rss_kib%s\n", s.sample_device ?
        ",device_mib" : "");
    for (i = 0; i < s.samples->len; i++) {
      Sample *p = &g_array_index (s.samples, Sample, i);

      fprintf (f, "%" G_GUINT64_FORMAT ",%.3f,%" G_GINT64_FORMAT, p->frame,
          p->t, p->rss_kib);
      if (s.sample_device)
        fprintf (f, ",%" G_GINT64_FORMAT, p->dev_mib);
      fputc ('\n', f);
    }
    fclose (f);
  }

  /* the first sample at or after the warm-up */
  for (warm_idx = 0; warm_idx < s.samples->len; warm_idx++)
    if (g_array_index (s.samples, Sample, warm_idx).frame >=
        MAX (s.warmup_frac * s.frames, 1))
      break;
  fit_ok = fit_growth (s.samples, warm_idx, FALSE, 1.0, &rss);
  if (s.sample_device && s.samples->len > 1
      && g_array_index (s.samples, Sample, s.samples->len - 1).dev_mib >= 0)
    have_dev = fit_growth (s.samples, warm_idx, TRUE, 1.0, &dev);

  /* fitted growth over the span, against the budget */
  growth_kib = rss.slope * rss.span;
  growth_limit_kib = MAX (s.max_slope_kib_per_1000 * rss.span / 1000.0,
      s.noise_floor_kib);

#define KV(fmt, ...) g_string_append_printf (summary, fmt "\n", __VA_ARGS__)
  KV ("backend=%s", s.backend);
  KV ("model=%s", s.model);
  KV ("frame_size=%dx%d %s", s.width, s.height, s.format);
  KV ("frames_requested=%d", s.frames);
  KV ("frames_in=%" G_GUINT64_FORMAT, s.in_frames);
  KV ("frames_out=%" G_GUINT64_FORMAT, s.out_frames);
  KV ("qos_dropped=%" G_GUINT64_FORMAT, s.qos_dropped);
  KV ("errors=%u", s.errors);
  KV ("warnings=%u", s.warnings);
  KV ("seconds=%.1f", secs);
  KV ("frames_per_second=%.1f", s.out_frames / MAX (secs, 1e-9));
  KV ("samples=%u", s.samples->len);
  KV ("rss_baseline_kib=%" G_GINT64_FORMAT,
      g_array_index (s.samples, Sample, 0).rss_kib);
  if (s.samples->len > 1)
    KV ("rss_after_first_frame_kib=%" G_GINT64_FORMAT,
        g_array_index (s.samples, Sample, 1).rss_kib);
  KV ("rss_final_kib=%" G_GINT64_FORMAT,
      g_array_index (s.samples, Sample, s.samples->len - 1).rss_kib);
  KV ("warmup_frames=%" G_GUINT64_FORMAT, warm_idx < s.samples->len ?
      g_array_index (s.samples, Sample, warm_idx).frame : 0);
  KV ("fit_samples=%u", rss.n);
  KV ("rss_slope_bytes_per_frame=%.4f", rss.slope * 1024.0);
  KV ("rss_slope_kib_per_1000_frames=%.3f", rss.slope * 1000.0);
  KV ("rss_fitted_growth_kib=%.1f", growth_kib);
  KV ("rss_growth_limit_kib=%.1f", growth_limit_kib);
  KV ("rss_first_decile_mean_kib=%.1f", rss.first_mean);
  KV ("rss_last_decile_mean_kib=%.1f", rss.last_mean);
  KV ("rss_decile_growth_kib=%.1f", rss.last_mean - rss.first_mean);
  if (have_dev) {
    KV ("device_slope_kib_per_1000_frames=%.3f", dev.slope * 1024 * 1000.0);
    KV ("device_first_decile_mean_mib=%.2f", dev.first_mean);
    KV ("device_last_decile_mean_mib=%.2f", dev.last_mean);
  }

  if (s.errors || s.out_frames != (guint64) s.frames
      || s.in_frames != s.out_frames + s.qos_dropped) {
    KV ("fail=%s", s.first_error ? s.first_error :
        "frames lost or pipeline error");
    ok = FALSE;
  }
  if (!fit_ok) {
    KV ("fail=%s", "too few samples after warm-up");
    ok = FALSE;
  }
  if (growth_kib > growth_limit_kib) {
    KV ("fail=RSS grows %.1f KiB over %.0f frames (limit %.1f)", growth_kib,
        rss.span, growth_limit_kib);
    ok = FALSE;
  }
  if (rss.last_mean - rss.first_mean > s.max_decile_growth_mib * 1024.0) {
    KV ("fail=last decile %.0f KiB above the first (limit %.0f)",
        rss.last_mean - rss.first_mean, s.max_decile_growth_mib * 1024.0);
    ok = FALSE;
  }
  if (s.sample_device) {
    if (!have_dev) {
      KV ("fail=%s", "no device memory samples (nvidia-smi)");
      ok = FALSE;
    } else if (dev.last_mean - dev.first_mean > s.max_dev_decile_growth_mib
        || dev.slope * dev.span > MAX (s.max_dev_decile_growth_mib,
            s.max_slope_kib_per_1000 * dev.span / 1000.0 / 1024.0)) {
      KV ("fail=device memory grows %.2f MiB (deciles)",
          dev.last_mean - dev.first_mean);
      ok = FALSE;
    }
  }
  KV ("result=%s", ok ? "PASS" : "FAIL");
#undef KV
  g_print ("%s", summary->str);

  if (s.json) {
    gchar **lines = g_strsplit (summary->str, "\n", -1), **l;

    f = fopen (s.json, "w");
    if (f) {
      gboolean first = TRUE;

      fputs ("{", f);
      for (l = lines; *l; l++) {
        gchar *eq = strchr (*l, '='), *end;
        gchar *v;

        if (!eq)
          continue;
        *eq = '\0';
        v = eq + 1;
        g_ascii_strtod (v, &end);
        if (*v && *end == '\0')
          fprintf (f, "%s\n  \"%s\": %s", first ? "" : ",", *l, v);
        else {
          gchar *esc = g_strescape (v, NULL);
          fprintf (f, "%s\n  \"%s\": \"%s\"", first ? "" : ",", *l, esc);
          g_free (esc);
        }
        first = FALSE;
      }
      fputs ("\n}\n", f);
      fclose (f);
    }
    g_strfreev (lines);
  }

  gst_bus_remove_watch (bus);
  gst_object_unref (bus);
  gst_object_unref (sr);
  gst_object_unref (sink);
  gst_object_unref (pipe);
  g_main_loop_unref (s.loop);
  g_array_unref (s.samples);
  g_string_free (summary, TRUE);
  g_free (desc);
  g_free (s.model);
  g_free (s.backend);
  g_free (s.format);
  g_free (s.csv);
  g_free (s.json);
  g_free (s.first_error);
  return ok ? 0 : 1;
}
