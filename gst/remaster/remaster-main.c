/* ehat-remaster — remaster a whole film with the ehatsr element.
 *
 *   ehat-remaster IN OUT [options]        plan, run the segments, join
 *   ehat-remaster --status WORKDIR        progress of a job
 *   ehat-remaster --join WORKDIR          the final step alone
 *   ehat-remaster --worker WORKDIR INDEX  one segment (internal: used by
 *                                         --jobs and by Slurm array tasks)
 *
 * The modes share one work directory (WORKDIR/manifest.json and the
 * segment files); see remaster-manifest.h for its rules and
 * docs/remastering.md for the recipes. */
#include "remaster-check.h"
#include "remaster-encoder.h"
#include "remaster-error.h"
#include "remaster-fs.h"
#include "remaster-join.h"
#include "remaster-manifest.h"
#include "remaster-pipeline.h"
#include "remaster-plan.h"
#include "remaster-progress.h"
#include "remaster-run.h"
#include "remaster-slurm.h"
#include "remaster-status.h"
#include "remaster-worker.h"

#include <gst/gst.h>
#include <glib/gstdio.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

typedef struct
{
  gchar *model;
  gchar *scale_to;
  gchar *tile_size;
  gchar *encoder;
  gint quality;
  gdouble segment_seconds;
  gint jobs;
  gchar *devices;
  gchar *backend;
  gchar *precision;
  gint ensemble;                /* 0: not given */
  gchar *workdir;
  gboolean resume;
  gboolean json;
  gboolean keep_workdir;
  gboolean force;
  gchar *status;
  gboolean check;
  gchar *join;
  gchar *worker;
  gint device_id;
  gchar *cpu_set;
  gboolean die_with_parent;
  gboolean progress_lines;
  gboolean slurm;
  gchar *partition;
  gint gpus_per_task;
  gint cpus_per_task;
  gchar *sbatch_args;
  gchar **rest;
  gint64 started_us;
} Options;

/* WIDTHxHEIGHT, each 1..max; a lone N means NxN where `square` allows. */
static gboolean
parse_size (const gchar * s, const gchar * option, gboolean square,
    guint64 max, gint * w, gint * h, GError ** error)
{
  gchar *end = NULL;
  guint64 a = g_ascii_strtoull (s, &end, 10), b = a;
  if (end == s || (*end && *end != 'x' && *end != 'X') || (!*end && !square))
    goto bad;
  if (*end) {
    const gchar *p = end + 1;
    b = g_ascii_strtoull (p, &end, 10);
    if (end == p || *end)
      goto bad;
  }
  if (a < 1 || b < 1 || a > max || b > max)
    goto bad;
  *w = (gint) a;
  *h = (gint) b;
  return TRUE;
bad:
  g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_ARGS,
      "%s wants WIDTHxHEIGHT%s, each 1 to %" G_GUINT64_FORMAT ", not '%s'",
      option, square ? " or one size for square tiles (e.g. 256x192 or 256)"
      : " (e.g. 3840x2160)", max, s);
  return FALSE;
}

static GArray *
parse_devices (const gchar * s, GError ** error)
{
  g_auto (GStrv) parts = g_strsplit (s, ",", -1);
  GArray *ids = g_array_new (FALSE, FALSE, sizeof (gint));
  for (guint i = 0; parts[i]; i++) {
    guint64 v;
    if (!g_ascii_string_to_unsigned (g_strstrip (parts[i]), 10, 0, 1023, &v,
            NULL)) {
      g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_ARGS,
          "--devices wants GPU numbers separated by commas (e.g. 0,1), "
          "not '%s'", s);
      g_array_unref (ids);
      return NULL;
    }
    gint id = (gint) v;
    g_array_append_val (ids, id);
  }
  if (ids->len == 0) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_ARGS,
        "--devices is empty");
    g_array_unref (ids);
    return NULL;
  }
  return ids;
}

static gboolean
apply_cpu_set (const gchar * list, GError ** error)
{
  /* Must happen before the first thread exists: threads inherit the mask
   * of the thread that creates them, and libehat sizes its pool from it. */
  cpu_set_t set;
  CPU_ZERO (&set);
  g_auto (GStrv) parts = g_strsplit (list, ",", -1);
  for (guint i = 0; parts[i]; i++) {
    guint64 c;
    if (!g_ascii_string_to_unsigned (parts[i], 10, 0, CPU_SETSIZE - 1, &c,
            NULL)) {
      g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_ARGS,
          "--cpu-set: bad CPU list '%s'", list);
      return FALSE;
    }
    CPU_SET ((int) c, &set);
  }
  if (sched_setaffinity (0, sizeof set, &set) != 0)
    g_printerr ("ehat-remaster: warning: cannot pin to CPUs %s\n", list);
  return TRUE;
}

static void
cleanup_segments (const gchar * workdir, guint n_segments)
{
  for (guint i = 0; i < n_segments; i++) {
    g_autofree gchar *seg = remaster_manifest_segment_path (workdir, i);
    g_autofree gchar *prog = g_strconcat (seg, ".progress", NULL);
    g_unlink (seg);
    g_unlink (prog);
  }
  g_autofree gchar *segdir = g_build_filename (workdir, "segments", NULL);
  g_rmdir (segdir);
}

static void
cleanup_workdir (const gchar * workdir, guint n_segments)
{
  /* Only what this program wrote: the work directory may be one the user
   * named, with other files in it. */
  cleanup_segments (workdir, n_segments);
  const gchar *files[] = { "manifest.json", "manifest.lock", "driver.lock" };
  for (guint i = 0; i < G_N_ELEMENTS (files); i++) {
    g_autofree gchar *p = g_build_filename (workdir, files[i], NULL);
    g_unlink (p);
  }
  remaster_slurm_cleanup (workdir);
  g_rmdir (workdir);
}

static gint
fail (GError * error)
{
  g_printerr ("ehat-remaster: error: %s\n", error->message);
  gint code = error->domain == REMASTER_ERROR
      && error->code == REMASTER_ERROR_ARGS ? 2 : 1;
  g_error_free (error);
  return code;
}

static gint
run_worker (Options * o)
{
  GError *error = NULL;
  const gchar *index_s = o->rest && o->rest[0] ? o->rest[0] :
      g_getenv ("SLURM_ARRAY_TASK_ID");
  guint64 index;
  if (!index_s || !g_ascii_string_to_unsigned (index_s, 10, 0, G_MAXUINT,
          &index, NULL))
    return fail (g_error_new (REMASTER_ERROR, REMASTER_ERROR_ARGS,
            "--worker WORKDIR INDEX: segment index missing or invalid"));
  if (o->die_with_parent) {
    /* A worker of a local run must not outlive its driver: a resumed run
     * would otherwise redo a segment that an orphan is still writing. */
    pid_t parent = getppid ();
    prctl (PR_SET_PDEATHSIG, SIGKILL);
    if (getppid () != parent)
      return 1;
  }
  if (o->cpu_set && !apply_cpu_set (o->cpu_set, &error))
    return fail (error);
  gst_init (NULL, NULL);
  remaster_debug_init ();
  RemasterWorkerOptions wo = { o->device_id, o->progress_lines,
    o->started_us
  };
  if (!remaster_worker_run (o->worker, (guint) index, &wo, &error))
    return fail (error);
  return 0;
}

static gint
run_join_only (Options * o)
{
  GError *error = NULL;
  gst_init (NULL, NULL);
  remaster_debug_init ();
  g_autoptr (RemasterManifest) m = remaster_manifest_load (o->join, &error);
  if (!m)
    return fail (error);
  g_autoptr (RemasterProgress) progress = remaster_progress_new (m, o->json);
  remaster_progress_event (progress, "join", NULL);
  RemasterJoinResult jr = { 0 };
  if (!remaster_join_run (o->join, &jr, &error))
    return fail (error);
  RemasterReport r = { jr.frames, jr.bytes, 0, NULL, 0, 0, jr.width,
    jr.height, 0
  };
  remaster_progress_report (progress, m, &r);
  /* The bulky segment files go; the manifest and the Slurm logs stay, so
   * that --status can still tell that the job is complete. */
  if (!o->keep_workdir)
    cleanup_segments (o->join, m->segments->len);
  return 0;
}

static gint
run_check (Options * o)
{
  GError *error = NULL;
  if (!o->rest || !o->rest[0] || !o->rest[1] || o->rest[2])
    return fail (g_error_new (REMASTER_ERROR, REMASTER_ERROR_ARGS,
            "--check wants IN and OUT"));
  gst_init (NULL, NULL);
  remaster_debug_init ();
  if (remaster_check_files (o->rest[0], o->rest[1], o->json, &error))
    return 0;
  return error ? fail (error) : 1;
}

static gint
run_film (Options * o)
{
  GError *error = NULL;
  if (!o->rest || !o->rest[0] || !o->rest[1] || o->rest[2])
    return fail (g_error_new (REMASTER_ERROR, REMASTER_ERROR_ARGS,
            "expected IN and OUT (see --help)"));
  RemasterPlanOptions po = {
    o->rest[0], o->rest[1], o->model, o->backend, o->precision, o->encoder,
    o->quality,
    0, 0, o->segment_seconds, o->force, o->ensemble, 0, 0
  };
  if (o->scale_to && !parse_size (o->scale_to, "--scale-to", FALSE, 65536,
          &po.scale_to_width, &po.scale_to_height, &error))
    return fail (error);
  /* ehatsr's tile-size range */
  if (o->tile_size && !parse_size (o->tile_size, "--tile-size", TRUE, 8192,
          &po.tile_width, &po.tile_height, &error))
    return fail (error);
  if (o->segment_seconds < 0 || (o->segment_seconds > 0
          && o->segment_seconds < 0.001))
    return fail (g_error_new (REMASTER_ERROR, REMASTER_ERROR_ARGS,
            "--segment-seconds must be positive"));
  if (o->jobs < 0 || o->jobs > 1024)
    return fail (g_error_new (REMASTER_ERROR, REMASTER_ERROR_ARGS,
            "--jobs must be between 1 and 1024"));
  g_autoptr (GArray) devices = NULL;
  if (o->devices && !(devices = parse_devices (o->devices, &error)))
    return fail (error);
  if (o->quality < -1)
    return fail (g_error_new (REMASTER_ERROR, REMASTER_ERROR_ARGS,
            "--quality must not be negative"));

  gst_init (NULL, NULL);
  remaster_debug_init ();
  if (!remaster_plan_check (&po, &error))
    return fail (error);

  /* Before anything is written: a GPU-only job on a machine without one
   * (the submit host of a cluster may have none: not checked there). */
  g_autofree gchar *no_gpu = NULL;
  gboolean no_gpu_checked = FALSE;
  if (!o->slurm && !g_str_equal (po.backend, "cpu")) {
    gint scale;
    g_autofree gchar *model = remaster_plan_resolve_model (po.model, &scale,
        &error);
    if (!model)
      return fail (error);
    no_gpu = remaster_run_gpu_unusable (model, po.backend);
    no_gpu_checked = TRUE;
    if (no_gpu && g_str_equal (po.backend, "cuda"))
      return fail (g_error_new (REMASTER_ERROR, REMASTER_ERROR_ELEMENT,
              "--backend cuda: no usable GPU here (%s)", no_gpu));
  }

  g_autofree gchar *workdir = o->workdir ? g_canonicalize_filename (o->workdir,
      NULL) : g_strconcat (po.output, ".ehat-work", NULL);
  if (!o->workdir) {
    g_autofree gchar *abs = g_canonicalize_filename (workdir, NULL);
    g_free (workdir);
    workdir = g_steal_pointer (&abs);
  }
  gboolean created = !g_file_test (workdir, G_FILE_TEST_EXISTS);
  if (g_mkdir_with_parents (workdir, 0755) != 0)
    return fail (g_error_new (REMASTER_ERROR, REMASTER_ERROR_MANIFEST,
            "cannot create the work directory %s", workdir));
  g_autofree gchar *lock_path = g_build_filename (workdir, "driver.lock",
      NULL);
  g_autoptr (RemasterLock) lock = remaster_lock_acquire (lock_path, FALSE,
      &error);
  if (!lock) {
    if (g_error_matches (error, REMASTER_ERROR, REMASTER_ERROR_BUSY)) {
      g_clear_error (&error);
      error = g_error_new (REMASTER_ERROR, REMASTER_ERROR_BUSY,
          "another ehat-remaster is working in %s", workdir);
    }
    return fail (error);
  }

  g_autoptr (RemasterManifest) m = NULL;
  gdouble plan_seconds = 0;
  if (remaster_manifest_exists (workdir)) {
    if (!o->resume)
      return fail (g_error_new (REMASTER_ERROR, REMASTER_ERROR_ARGS,
              "%s already holds a job; add --resume to continue it, or "
              "remove the directory to start over", workdir));
    if (!(m = remaster_manifest_load (workdir, &error))
        || !remaster_plan_matches (m, &po, &error))
      return fail (error);
  } else {
    gint64 t_plan = g_get_monotonic_time ();
    if (!(m = remaster_plan_create (workdir, &po, &error))) {
      /* nothing worth keeping: leave no half-made work directory behind */
      g_clear_pointer (&lock, remaster_lock_release);
      if (created)
        cleanup_workdir (workdir, 0);
      return fail (error);
    }
    plan_seconds = (g_get_monotonic_time () - t_plan) / 1e6;
  }

  if (o->slurm) {
    RemasterSlurmOptions so = { o->partition, o->gpus_per_task,
      o->cpus_per_task, o->sbatch_args, o->keep_workdir, o->json
    };
    if (!remaster_slurm_submit (workdir, &so, &error))
      return fail (error);
    return 0;
  }

  guint jobs = o->jobs > 0 ? (guint) o->jobs : devices ? devices->len : 1;
  const gchar *backend = m->settings.backend;
  if (!no_gpu_checked && !g_str_equal (backend, "cpu"))
    no_gpu = remaster_run_gpu_unusable (m->settings.model, backend);
  if (no_gpu && g_str_equal (backend, "cuda"))
    return fail (g_error_new (REMASTER_ERROR, REMASTER_ERROR_ELEMENT,
            "--backend cuda: no usable GPU here (%s)", no_gpu));
  if (no_gpu && devices && !o->json)
    g_printerr ("ehat-remaster: warning: --devices given but no GPU is "
        "usable (%s); the workers run on the CPU\n", no_gpu);
  /* CPU workers get their own cores (libehat sizes its pool to them) */
  gboolean pin = jobs > 1 && (g_str_equal (backend, "cpu") || no_gpu);

  guint redone = 0, reused = 0;
  if (!remaster_run_prepare (workdir, &redone, &reused, &error))
    return fail (error);
  remaster_manifest_free (m);
  if (!(m = remaster_manifest_load (workdir, &error)))
    return fail (error);

  g_autoptr (RemasterProgress) progress = remaster_progress_new (m, o->json);
  {
    g_autofree gchar *qw = remaster_json_quote (workdir);
    g_autofree gchar *fields = g_strdup_printf ("\"workdir\":%s,"
        "\"segments\":%u,\"frames\":%" G_GUINT64_FORMAT ",\"jobs\":%u,"
        "\"reused\":%u,\"redone\":%u,\"plan-seconds\":%.3f", qw,
        m->segments->len, m->frames, jobs, reused, redone, plan_seconds);
    remaster_progress_event (progress, "start", fields);
  }
  if (!o->json && (reused || redone))
    g_printerr ("ehat-remaster: resuming: %u segments kept, %u to redo\n",
        reused, redone);

  RemasterRunOptions ro = { jobs, devices ? (gint *) devices->data : NULL,
    devices ? devices->len : 0, pin
  };
  if (!remaster_run_local (workdir, &ro, progress, &error))
    return fail (error);

  if (!o->json)
    g_printerr ("ehat-remaster: joining %u segments\n", m->segments->len);
  remaster_progress_event (progress, "join", NULL);
  RemasterJoinResult jr = { 0 };
  gint64 t_join = g_get_monotonic_time ();
  if (!remaster_join_run (workdir, &jr, &error))
    return fail (error);
  jr.seconds = (g_get_monotonic_time () - t_join) / 1e6;

  remaster_manifest_free (m);
  if (!(m = remaster_manifest_load (workdir, &error)))
    return fail (error);
  RemasterReport r = { jr.frames, jr.bytes, jobs, o->devices, redone, reused,
    jr.width, jr.height, jr.seconds
  };
  remaster_progress_report (progress, m, &r);
  if (!o->keep_workdir) {
    g_clear_pointer (&lock, remaster_lock_release);
    cleanup_workdir (workdir, m->segments->len);
  }
  return 0;
}

int
main (int argc, char **argv)
{
  Options o = { 0 };
  o.started_us = g_get_monotonic_time ();
  o.quality = -1;
  o.device_id = -1;
  GOptionEntry entries[] = {
    {"model", 0, 0, G_OPTION_ARG_FILENAME, &o.model,
        "Model file (default: ehatsr's, ehat-fast-x2)", "M"},
    {"scale-to", 0, 0, G_OPTION_ARG_STRING, &o.scale_to,
        "Resize the upscaled video to this size", "WxH"},
    {"tile-size", 0, 0, G_OPTION_ARG_STRING, &o.tile_size,
        "ehatsr tiles in input pixels, for every segment (default: the "
        "first worker's automatic choice, kept for all)", "WxH"},
    {"encoder", 0, 0, G_OPTION_ARG_STRING, &o.encoder,
        "x264, x265, nvh264, nvh265, vp9, vp8, ffv1 or a GStreamer encoder "
        "(default: x264 when installed)", "E"},
    {"quality", 0, 0, G_OPTION_ARG_INT, &o.quality,
        "x264/x265: CRF, nvh26x: QP, vp8/vp9: cq-level (lower is better)",
        "Q"},
    {"segment-seconds", 0, 0, G_OPTION_ARG_DOUBLE, &o.segment_seconds,
        "Cut at the first keyframe after every S seconds (default 60)", "S"},
    {"jobs", 0, 0, G_OPTION_ARG_INT, &o.jobs,
        "Worker processes (default: one per --devices entry, else 1)", "N"},
    {"devices", 0, 0, G_OPTION_ARG_STRING, &o.devices,
        "GPUs to spread the workers over", "0,1,..."},
    {"backend", 0, 0, G_OPTION_ARG_STRING, &o.backend,
        "ehatsr backend: auto (default), cuda, cpu", "B"},
    {"precision", 0, 0, G_OPTION_ARG_STRING, &o.precision,
        "ehatsr precision: auto (default: fp16 on a GPU), fp32, fp16, bf16, "
        "tf32 (GPU)", "P"},
    {"ensemble", 0, 0, G_OPTION_ARG_INT, &o.ensemble,
        "ehatsr self-ensemble: 1 (default, off), 2, 4 or 8 transforms per "
        "tile, for that many times the computation", "N"},
    {"workdir", 0, 0, G_OPTION_ARG_FILENAME, &o.workdir,
        "Work directory (default: OUT.ehat-work; shared storage for --slurm)",
        "DIR"},
    {"resume", 0, 0, G_OPTION_ARG_NONE, &o.resume,
        "Continue the job in the work directory", NULL},
    {"json", 0, 0, G_OPTION_ARG_NONE, &o.json,
        "Progress and report as JSON lines on stdout", NULL},
    {"keep-workdir", 0, 0, G_OPTION_ARG_NONE, &o.keep_workdir,
        "Keep the segments and manifest after a successful join", NULL},
    {"force", 0, 0, G_OPTION_ARG_NONE, &o.force,
        "Replace an existing output file", NULL},
    {"status", 0, 0, G_OPTION_ARG_FILENAME, &o.status,
        "Show the progress of the job in DIR and exit", "DIR"},
    {"check", 0, 0, G_OPTION_ARG_NONE, &o.check,
        "Compare OUT with IN: frames and their times, audio and subtitle "
        "packets, chapters, tags", NULL},
    {"join", 0, 0, G_OPTION_ARG_FILENAME, &o.join,
        "Join the finished segments of the job in DIR", "DIR"},
    {"slurm", 0, 0, G_OPTION_ARG_NONE, &o.slurm,
        "Submit the segments to Slurm as a job array plus a join job", NULL},
    {"partition", 0, 0, G_OPTION_ARG_STRING, &o.partition,
        "Slurm partition", "P"},
    {"gpus-per-task", 0, 0, G_OPTION_ARG_INT, &o.gpus_per_task,
        "Slurm: GPUs per array task (default 0: CPU workers)", "N"},
    {"cpus-per-task", 0, 0, G_OPTION_ARG_INT, &o.cpus_per_task,
        "Slurm: CPUs per array task (default 1)", "N"},
    {"sbatch-args", 0, 0, G_OPTION_ARG_STRING, &o.sbatch_args,
        "Slurm: more sbatch options, e.g. \"--time=2:00:00 --account=x\"",
        "ARGS"},
    {"worker", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_FILENAME, &o.worker,
        "Process one segment (WORKDIR INDEX)", "WORKDIR"},
    {"device-id", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_INT, &o.device_id,
        "Worker: GPU", "N"},
    {"cpu-set", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_STRING, &o.cpu_set,
        "Worker: CPUs to run on", "LIST"},
    {"die-with-parent", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_NONE,
        &o.die_with_parent, "Worker: exit with the driver", NULL},
    {"progress-lines", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_NONE,
        &o.progress_lines, "Worker: JSON progress lines on stdout", NULL},
    {G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &o.rest, NULL,
        NULL},
    {NULL}
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("IN OUT");
  g_option_context_set_summary (ctx,
      "Remaster a film: upscale its video with ehatsr, re-encode it, copy "
      "all audio\nand subtitle streams, chapters and tags untouched.  "
      "Resumable (--resume),\nparallel (--jobs, --devices), Slurm (--slurm).");
  g_option_context_add_main_entries (ctx, entries, NULL);
  GError *error = NULL;
  if (!g_option_context_parse (ctx, &argc, &argv, &error)) {
    g_printerr ("ehat-remaster: error: %s (see --help)\n", error->message);
    g_error_free (error);
    return 2;
  }
  /* defaults after parsing: GOption replaces a string without freeing
   * what was there */
  if (!o.backend)
    o.backend = g_strdup ("auto");
  if (!o.precision)
    o.precision = g_strdup ("auto");

  gint rc;
  if (o.worker)
    rc = run_worker (&o);
  else if (o.status)
    rc = remaster_status_print (o.status, o.json, &error) ? 0 : fail (error);
  else if (o.join)
    rc = run_join_only (&o);
  else if (o.check)
    rc = run_check (&o);
  else
    rc = run_film (&o);

  gchar **strings[] = { &o.model, &o.scale_to, &o.tile_size, &o.encoder,
    &o.devices, &o.backend, &o.precision, &o.workdir, &o.status, &o.join,
    &o.worker, &o.cpu_set, &o.partition, &o.sbatch_args
  };
  for (guint i = 0; i < G_N_ELEMENTS (strings); i++)
    g_clear_pointer (strings[i], g_free);
  g_strfreev (o.rest);
  return rc;
}
