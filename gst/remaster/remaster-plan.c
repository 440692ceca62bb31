/* remaster-plan.c — validate the command line, probe, cut, write the
 * manifest. */
#include "remaster-plan.h"
#include "remaster-join.h"
#include "remaster-encoder.h"
#include "remaster-error.h"
#include "remaster-pipeline.h"
#include "remaster-probe.h"
#include "remaster-segment.h"

#include <ehat.h>
#include <ehat-tiler.h>
#include <errno.h>
#include <glib/gstdio.h>
#include <sys/stat.h>
#include <unistd.h>

static gchar *
absolute_path (const gchar * path)
{
  g_autofree gchar *abs = g_canonicalize_filename (path, NULL);
  /* resolve symlinks of existing files so every node names the same file */
  char *real = realpath (abs, NULL);
  if (real) {
    gchar *r = g_strdup (real);
    free (real);
    return r;
  }
  return g_steal_pointer (&abs);
}

static gboolean
output_container_ok (const gchar * output)
{
  g_autofree gchar *lower = g_ascii_strdown (output, -1);
  return g_str_has_suffix (lower, ".mkv") || g_str_has_suffix (lower, ".mk3d")
      || g_str_has_suffix (lower, ".webm");
}

gboolean
remaster_plan_check (const RemasterPlanOptions * o, GError ** error)
{
  if (!g_file_test (o->input, G_FILE_TEST_EXISTS)) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_INPUT,
        "input %s does not exist", o->input);
    return FALSE;
  }
  if (!g_file_test (o->input, G_FILE_TEST_IS_REGULAR)
      || access (o->input, R_OK) != 0) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_INPUT,
        "input %s is not a readable file", o->input);
    return FALSE;
  }
  if (!output_container_ok (o->output)) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_ARGS,
        "output %s: the container is chosen by the extension, which must be "
        ".mkv (any codec, all audio and subtitle streams) or .webm", o->output);
    return FALSE;
  }
  g_autofree gchar *in = absolute_path (o->input);
  g_autofree gchar *out = absolute_path (o->output);
  if (g_str_equal (in, out)) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_ARGS,
        "the output must not be the input");
    return FALSE;
  }
  g_autofree gchar *dir = g_path_get_dirname (out);
  if (!g_file_test (dir, G_FILE_TEST_IS_DIR) || access (dir, W_OK) != 0) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_ARGS,
        "cannot write the output into %s (missing or not writable)", dir);
    return FALSE;
  }
  if (g_file_test (out, G_FILE_TEST_EXISTS) && !o->force) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_ARGS,
        "output %s exists (add --force to replace it)", o->output);
    return FALSE;
  }
  const gchar *backends[] = { "auto", "cuda", "cpu" };
  gboolean backend_ok = FALSE;
  for (guint i = 0; i < G_N_ELEMENTS (backends); i++)
    backend_ok |= g_str_equal (o->backend, backends[i]);
  if (!backend_ok) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_ARGS,
        "unknown backend '%s' (auto, cuda or cpu)", o->backend);
    return FALSE;
  }
  const gchar *precisions[] = { "auto", "fp32", "fp16", "bf16", "tf32" };
  gboolean precision_ok = FALSE;
  for (guint i = 0; i < G_N_ELEMENTS (precisions); i++)
    precision_ok |= g_str_equal (o->precision, precisions[i]);
  if (!precision_ok) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_ARGS,
        "unknown precision '%s' (auto, fp32, fp16, bf16 or tf32)",
        o->precision);
    return FALSE;
  }
  /* libehat's sizes; 0 = not given */
  if (!ehat_ensemble_check (o->ensemble, NULL)) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_ARGS,
        "--ensemble %d: 1, 2, 4 or 8", o->ensemble);
    return FALSE;
  }
  const gchar *encoder = o->encoder ? o->encoder : remaster_encoder_default ();
  return remaster_encoder_check (encoder, o->quality, error);
}

gchar *
remaster_plan_resolve_model (const gchar * model, gint * scale,
    GError ** error)
{
  g_autofree gchar *path = NULL;
  if (model) {
    path = absolute_path (model);
  } else {
    GstElement *e = remaster_make ("ehatsr", NULL, error);
    if (!e)
      return NULL;
    g_object_get (e, "model", &path, NULL);
    gst_object_unref (e);
    if (!path) {
      g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_MODEL,
          "ehatsr has no default model; give one with --model");
      return NULL;
    }
    gchar *abs = absolute_path (path);
    g_free (path);
    path = abs;
  }
  g_autoptr (GError) err = NULL;
  g_autoptr (EhatModel) m = ehat_model_load (path, &err);
  if (!m) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_MODEL,
        "cannot load model %s: %s", path, err->message);
    return NULL;
  }
  *scale = ehat_model_get_config (m)->upscale;
  return g_steal_pointer (&path);
}

static gboolean
stat_input (const gchar * path, gint64 * size, gint64 * mtime,
    GError ** error)
{
  GStatBuf st;
  if (g_stat (path, &st) != 0) {
    int e = errno;
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_INPUT,
        "cannot read input %s: %s", path, g_strerror (e));
    return FALSE;
  }
  *size = st.st_size;
  *mtime = st.st_mtime;
  return TRUE;
}

RemasterManifest *
remaster_plan_create (const gchar * workdir, const RemasterPlanOptions * o,
    GError ** error)
{
  g_autoptr (RemasterManifest) m = remaster_manifest_new ();
  m->input = absolute_path (o->input);
  m->output = absolute_path (o->output);
  if (!stat_input (m->input, &m->input_size, &m->input_mtime, error))
    return NULL;
  RemasterSettings *st = &m->settings;
  st->model = remaster_plan_resolve_model (o->model, &st->scale, error);
  if (!st->model)
    return NULL;
  st->backend = g_strdup (o->backend);
  st->precision = g_strdup (o->precision);
  st->ensemble = o->ensemble > 0 ? o->ensemble : 1;
  st->encoder = g_strdup (o->encoder ? o->encoder :
      remaster_encoder_default ());
  st->quality = o->quality;
  st->scale_to_width = o->scale_to_width;
  st->scale_to_height = o->scale_to_height;
  st->segment_seconds = o->segment_seconds > 0 ? o->segment_seconds :
      REMASTER_DEFAULT_SEGMENT_SECONDS;
  if (o->tile_width > 0) {
    st->tile_width = o->tile_width;
    st->tile_height = o->tile_height;
    st->tile_origin = g_strdup ("--tile-size");
  }

  GST_INFO ("probing %s", m->input);
  g_autoptr (RemasterProbe) probe = remaster_probe_run (m->input, error);
  if (!probe)
    return NULL;
  if (!remaster_join_check_streams (m->output, probe->audio_caps,
          probe->subtitle_caps, error))
    return NULL;
  m->video_caps = gst_caps_to_string (probe->video_caps);
  GstStructure *s = gst_caps_get_structure (probe->video_caps, 0);
  /* ehatsr takes whole progressive frames (it refuses woven fields, and
   * warns at the first interlaced frame of a mixed stream): say so now,
   * not in the first segment */
  const gchar *interlace = gst_structure_get_string (s, "interlace-mode");
  if (interlace && g_str_equal (interlace, "mixed")) {
    g_printerr ("ehat-remaster: warning: the input's video is "
        "interlace-mode=mixed: frames flagged interlaced are upscaled as "
        "progressive ones; if many are, deinterlace it first "
        "(docs/remastering.md, \"Interlaced sources\")\n");
  } else if (interlace && !g_str_equal (interlace, "progressive")) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_INPUT,
        "the input's video is interlaced (interlace-mode=%s) and ehatsr "
        "needs progressive frames: deinterlace it first "
        "(docs/remastering.md, \"Interlaced sources\")", interlace);
    return NULL;
  }
  gst_structure_get_int (s, "width", &m->width);
  gst_structure_get_int (s, "height", &m->height);
  if (!gst_structure_get_fraction (s, "framerate", &m->fps_n, &m->fps_d)) {
    m->fps_n = 0;
    m->fps_d = 1;
  }
  m->duration = probe->end;
  m->n_audio = probe->n_audio;
  m->n_subtitle = probe->n_subtitle;
  if (!remaster_segment_plan (probe, st->segment_seconds, m->segments,
          &m->skipped, error))
    return NULL;
  m->frames = probe->packets->len - m->skipped;
  if (probe->n_ignored)
    g_printerr ("ehat-remaster: warning: %u further video or data stream%s "
        "of the input %s not copied (only the first video stream is "
        "remastered)\n", probe->n_ignored, probe->n_ignored == 1 ? "" : "s",
        probe->n_ignored == 1 ? "is" : "are");
  if (m->skipped)
    g_printerr ("ehat-remaster: warning: %" G_GUINT64_FORMAT " frames before "
        "the first keyframe cannot be decoded and are left out\n",
        m->skipped);

  g_autofree gchar *segdir = g_build_filename (workdir, "segments", NULL);
  if (g_mkdir_with_parents (segdir, 0755) != 0) {
    int e = errno;
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_MANIFEST,
        "cannot create %s: %s", segdir, g_strerror (e));
    return NULL;
  }
  if (!remaster_manifest_save (m, workdir, error))
    return NULL;
  return g_steal_pointer (&m);
}

static gboolean
differs (const gchar * what, const gchar * job, const gchar * asked,
    GError ** error)
{
  g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_ARGS,
      "--resume: the job in the work directory has %s %s, not %s (resume "
      "without changing settings, or use another --workdir)", what, job,
      asked);
  return FALSE;
}

gboolean
remaster_plan_matches (const RemasterManifest * m,
    const RemasterPlanOptions * o, GError ** error)
{
  g_autofree gchar *in = absolute_path (o->input);
  g_autofree gchar *out = absolute_path (o->output);
  if (!g_str_equal (in, m->input))
    return differs ("input", m->input, in, error);
  if (!g_str_equal (out, m->output))
    return differs ("output", m->output, out, error);
  gint64 size, mtime;
  if (!stat_input (in, &size, &mtime, error))
    return FALSE;
  if (size != m->input_size || mtime != m->input_mtime) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_INPUT,
        "--resume: input %s changed since the job was planned (size or "
        "modification time); start a new job", in);
    return FALSE;
  }
  const RemasterSettings *st = &m->settings;
  if (o->model) {
    g_autofree gchar *model = absolute_path (o->model);
    if (!g_str_equal (model, st->model))
      return differs ("model", st->model, model, error);
  }
  if (!g_str_equal (o->precision, "auto")
      && g_strcmp0 (o->precision, st->precision) != 0)
    return differs ("precision", st->precision, o->precision, error);
  if (o->ensemble > 0 && o->ensemble != st->ensemble) {
    g_autofree gchar *a = g_strdup_printf ("%d", st->ensemble);
    g_autofree gchar *b = g_strdup_printf ("%d", o->ensemble);
    return differs ("ensemble", a, b, error);
  }
  if (o->encoder && !g_str_equal (o->encoder, st->encoder))
    return differs ("encoder", st->encoder, o->encoder, error);
  if (o->quality >= 0 && o->quality != st->quality) {
    g_autofree gchar *a = g_strdup_printf ("%d", st->quality);
    g_autofree gchar *b = g_strdup_printf ("%d", o->quality);
    return differs ("quality", a, b, error);
  }
  if (o->segment_seconds > 0 && o->segment_seconds != st->segment_seconds) {
    g_autofree gchar *a = g_strdup_printf ("%g", st->segment_seconds);
    g_autofree gchar *b = g_strdup_printf ("%g", o->segment_seconds);
    return differs ("segment length", a, b, error);
  }
  if (o->tile_width > 0 && (o->tile_width != st->tile_width
          || o->tile_height != st->tile_height)) {
    g_autofree gchar *a = st->tile_width ? g_strdup_printf ("%dx%d",
        st->tile_width, st->tile_height) : g_strdup ("automatic");
    g_autofree gchar *b = g_strdup_printf ("%dx%d", o->tile_width,
        o->tile_height);
    return differs ("tile size", a, b, error);
  }
  if (o->scale_to_width > 0 && (o->scale_to_width != st->scale_to_width
          || o->scale_to_height != st->scale_to_height)) {
    g_autofree gchar *a = g_strdup_printf ("%dx%d", st->scale_to_width,
        st->scale_to_height);
    g_autofree gchar *b = g_strdup_printf ("%dx%d", o->scale_to_width,
        o->scale_to_height);
    return differs ("--scale-to", a, b, error);
  }
  return TRUE;
}
