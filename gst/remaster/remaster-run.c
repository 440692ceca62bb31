/* remaster-run.c — local worker processes (--jobs N). */
#include "remaster-run.h"
#include "remaster-error.h"
#include "remaster-fs.h"
#include "remaster-manifest.h"

#include <ehat.h>
#include <gio/gio.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <sched.h>
#include <signal.h>
#include <string.h>

/* ---- preparing a (re)run ---- */

typedef struct
{
  const gchar *workdir;
  guint redone;
  guint reused;
} PrepareData;

static gboolean
reset_unfinished (RemasterManifest * m, gpointer user_data, GError ** error)
{
  PrepareData *d = user_data;
  d->redone = d->reused = 0;
  for (guint i = 0; i < m->segments->len; i++) {
    RemasterSegment *s = g_ptr_array_index (m->segments, i);
    if (s->state == REMASTER_SEGMENT_DONE) {
      /* Done means "file renamed into place, then recorded": the file must
       * be there with the recorded size; the join recounts its frames. */
      g_autofree gchar *path = remaster_manifest_segment_path (d->workdir, i);
      if (remaster_fs_file_size (path) == (gint64) s->bytes) {
        d->reused++;
        continue;
      }
      g_free (s->error);
      s->error = g_strdup ("segment file missing or truncated");
      s->state = REMASTER_SEGMENT_PENDING;
      d->redone++;
    } else if (s->state != REMASTER_SEGMENT_PENDING) {
      s->state = REMASTER_SEGMENT_PENDING;
      d->redone++;
    }
  }
  m->joined = FALSE;
  return TRUE;
}

static void
remove_stale_files (const gchar * workdir)
{
  /* Temporary segment files of killed workers ("seg-NNNNN.mkv.part-...")
   * and progress files.  Only called while this driver holds the work
   * directory, so no live local worker owns them. */
  g_autofree gchar *dir = g_build_filename (workdir, "segments", NULL);
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  const gchar *name;
  while (d && (name = g_dir_read_name (d))) {
    if (g_str_has_prefix (name, "seg-") && (strstr (name, ".part-")
            || g_str_has_suffix (name, ".progress"))) {
      g_autofree gchar *path = g_build_filename (dir, name, NULL);
      g_unlink (path);
    }
  }
}

gboolean
remaster_run_prepare (const gchar * workdir, guint * redone, guint * reused,
    GError ** error)
{
  PrepareData d = { workdir, 0, 0 };
  if (!remaster_manifest_update (workdir, reset_unfinished, &d, error))
    return FALSE;
  remove_stale_files (workdir);
  *redone = d.redone;
  *reused = d.reused;
  return TRUE;
}

gchar *
remaster_run_gpu_unusable (const gchar * model_path, const gchar * backend)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (EhatModel) model = ehat_model_load (model_path, &error);
  if (!model)
    return g_strdup (error->message);
  EhatEngineOptions opts = EHAT_ENGINE_OPTIONS_INIT;
  opts.n_threads = 1;
  /* what the workers' ehatsr will do: cuda opens the backend module
   * directly, auto probes the driver first */
  if (g_str_equal (backend, "cuda"))
    opts.backend = EHAT_BACKEND_CUDA;
  g_autoptr (EhatEngine) engine = ehat_engine_new (model, &opts, &error);
  if (!engine)
    return g_strdup (error->message);
  if (ehat_engine_get_backend (engine) == EHAT_BACKEND_CUDA)
    return NULL;
  const gchar *why = ehat_engine_get_fallback_reason (engine);
  return g_strdup (why ? why : "no CUDA device");
}

gchar *
remaster_run_self_exe (void)
{
  gchar *exe = g_file_read_link ("/proc/self/exe", NULL);
  return exe ? exe : g_strdup ("ehat-remaster");
}

/* ---- running workers ---- */

typedef struct _Run Run;

typedef struct
{
  Run *run;
  guint slot;
  guint index;
  GSubprocess *proc;
  GDataInputStream *out;
  gboolean exited;
  gboolean eof;
  gboolean success;
} Task;

struct _Run
{
  const gchar *workdir;
  const RemasterRunOptions *options;
  RemasterProgress *progress;
  GMainLoop *loop;
  gchar *exe;
  GQueue pending;               /* segment indices */
  Task **slots;
  gchar **cpu_sets;             /* per slot, or NULL */
  guint running;
  gboolean stop;                /* a failure or a signal: start nothing new */
  gboolean interrupted;
  GError *error;                /* the first failure */
};

static gchar **
partition_cpus (guint jobs)
{
  /* Each CPU worker gets its own cores: libehat sizes its thread pool to
   * the CPUs it may run on, so two workers on two cores run one thread
   * each instead of fighting over both. */
  cpu_set_t set;
  CPU_ZERO (&set);
  if (sched_getaffinity (0, sizeof set, &set) != 0)
    return NULL;
  g_autoptr (GArray) cpus = g_array_new (FALSE, FALSE, sizeof (gint));
  for (gint c = 0; c < CPU_SETSIZE; c++)
    if (CPU_ISSET (c, &set))
      g_array_append_val (cpus, c);
  guint n = cpus->len;
  if (n < 2 || jobs < 2)
    return NULL;
  gchar **sets = g_new0 (gchar *, jobs + 1);
  for (guint j = 0; j < jobs; j++) {
    GString *s = g_string_new (NULL);
    guint from = jobs <= n ? j * n / jobs : j % n;
    guint to = jobs <= n ? (j + 1) * n / jobs : from + 1;
    for (guint c = from; c < to; c++)
      g_string_append_printf (s, "%s%d", s->len ? "," : "",
          g_array_index (cpus, gint, c));
    sets[j] = g_string_free (s, FALSE);
  }
  return sets;
}

static void start_next (Run * run);

static void
set_failure (Run * run, GError * error)
{
  if (!run->error)
    run->error = error;
  else
    g_error_free (error);
  run->stop = TRUE;
}

static gboolean
read_segment (RemasterManifest * m, guint index, RemasterSegmentState * state,
    gchar ** error_text)
{
  RemasterSegment *s = remaster_manifest_get_segment (m, index);
  if (!s)
    return FALSE;
  *state = s->state;
  *error_text = g_strdup (s->error);
  return TRUE;
}

static gboolean
reset_interrupted (RemasterManifest * m, gpointer user_data, GError ** error)
{
  RemasterSegment *s = remaster_manifest_get_segment (m,
      GPOINTER_TO_UINT (user_data));
  if (s && s->state == REMASTER_SEGMENT_RUNNING)
    s->state = REMASTER_SEGMENT_PENDING;
  return TRUE;
}

static void
task_finish (Task * t)
{
  Run *run = t->run;
  run->slots[t->slot] = NULL;
  run->running--;

  g_autoptr (RemasterManifest) m = remaster_manifest_load (run->workdir, NULL);
  RemasterSegmentState state = REMASTER_SEGMENT_FAILED;
  g_autofree gchar *why = NULL;
  if (m)
    read_segment (m, t->index, &state, &why);

  if (t->success && state == REMASTER_SEGMENT_DONE) {
    remaster_progress_segment_done (run->progress, t->index);
  } else {
    remaster_progress_segment_reset (run->progress, t->index);
    if (run->interrupted) {
      /* Stopped by us, not broken: pending again, for --resume. */
      remaster_manifest_update (run->workdir, reset_interrupted,
          GUINT_TO_POINTER (t->index), NULL);
    } else {
      gint status = g_subprocess_get_status (t->proc);
      g_autofree gchar *how = g_subprocess_get_if_signaled (t->proc) ?
          g_strdup_printf ("killed by signal %d",
          g_subprocess_get_term_sig (t->proc)) :
          g_strdup_printf ("exit status %d", g_subprocess_get_if_exited
          (t->proc) ? g_subprocess_get_exit_status (t->proc) : status);
      set_failure (run, g_error_new (REMASTER_ERROR, REMASTER_ERROR_WORKER,
              "segment %u failed (%s): %s", t->index, how,
              why ? why : "see the worker's messages above"));
    }
  }
  remaster_progress_show (run->progress, TRUE);
  g_object_unref (t->out);
  g_object_unref (t->proc);
  g_free (t);
  start_next (run);
}

static void
on_line (GObject * source, GAsyncResult * res, gpointer user_data)
{
  Task *t = user_data;
  gsize len;
  g_autofree gchar *line = g_data_input_stream_read_line_finish (t->out, res,
      &len, NULL);
  if (!line) {
    t->eof = TRUE;
    if (t->exited)
      task_finish (t);
    return;
  }
  /* {"segment":N,"frames":F,"total":T} from the worker */
  g_autoptr (JsonParser) parser = json_parser_new ();
  if (json_parser_load_from_data (parser, line, len, NULL)
      && JSON_NODE_HOLDS_OBJECT (json_parser_get_root (parser))) {
    JsonObject *o = json_node_get_object (json_parser_get_root (parser));
    if (json_object_has_member (o, "frames")) {
      remaster_progress_segment_frames (t->run->progress, t->index,
          (guint64) json_object_get_int_member (o, "frames"));
      remaster_progress_show (t->run->progress, FALSE);
    }
  }
  g_data_input_stream_read_line_async (t->out, G_PRIORITY_DEFAULT, NULL,
      on_line, t);
}

static void
on_worker_exit (GObject * source, GAsyncResult * res, gpointer user_data)
{
  Task *t = user_data;
  t->success = g_subprocess_wait_check_finish (t->proc, res, NULL);
  t->exited = TRUE;
  if (t->eof)
    task_finish (t);
}

static gboolean
spawn (Run * run, guint slot, guint index)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new_with_free_func (g_free);
  g_ptr_array_add (argv, g_strdup (run->exe));
  g_ptr_array_add (argv, g_strdup ("--worker"));
  g_ptr_array_add (argv, g_strdup (run->workdir));
  g_ptr_array_add (argv, g_strdup_printf ("%u", index));
  g_ptr_array_add (argv, g_strdup ("--die-with-parent"));
  g_ptr_array_add (argv, g_strdup ("--progress-lines"));
  if (run->options->n_devices) {
    g_ptr_array_add (argv, g_strdup ("--device-id"));
    g_ptr_array_add (argv, g_strdup_printf ("%d",
            run->options->devices[slot % run->options->n_devices]));
  }
  if (run->cpu_sets) {
    g_ptr_array_add (argv, g_strdup ("--cpu-set"));
    g_ptr_array_add (argv, g_strdup (run->cpu_sets[slot]));
  }
  g_ptr_array_add (argv, NULL);

  GError *error = NULL;
  GSubprocess *proc = g_subprocess_newv ((const gchar * const *) argv->pdata,
      G_SUBPROCESS_FLAGS_STDOUT_PIPE, &error);
  if (!proc) {
    g_prefix_error (&error, "cannot start a worker: ");
    set_failure (run, error);
    return FALSE;
  }
  Task *t = g_new0 (Task, 1);
  t->run = run;
  t->slot = slot;
  t->index = index;
  t->proc = proc;
  t->out = g_data_input_stream_new (g_subprocess_get_stdout_pipe (proc));
  run->slots[slot] = t;
  run->running++;
  g_data_input_stream_read_line_async (t->out, G_PRIORITY_DEFAULT, NULL,
      on_line, t);
  g_subprocess_wait_check_async (proc, NULL, on_worker_exit, t);
  return TRUE;
}

static void
start_next (Run * run)
{
  for (guint slot = 0; slot < run->options->jobs && !run->stop; slot++) {
    if (run->slots[slot] || g_queue_is_empty (&run->pending))
      continue;
    guint index = GPOINTER_TO_UINT (g_queue_pop_head (&run->pending));
    spawn (run, slot, index);
  }
  if (run->running == 0)
    g_main_loop_quit (run->loop);
}

static gboolean
on_signal (gpointer user_data)
{
  Run *run = user_data;
  if (!run->interrupted) {
    run->interrupted = TRUE;
    set_failure (run, g_error_new (REMASTER_ERROR, REMASTER_ERROR_WORKER,
            "interrupted; continue with --resume"));
    for (guint i = 0; i < run->options->jobs; i++)
      if (run->slots[i])
        g_subprocess_send_signal (run->slots[i]->proc, SIGTERM);
  }
  return G_SOURCE_CONTINUE;
}

gboolean
remaster_run_local (const gchar * workdir, const RemasterRunOptions * options,
    RemasterProgress * progress, GError ** error)
{
  g_autoptr (RemasterManifest) m = remaster_manifest_load (workdir, error);
  if (!m)
    return FALSE;
  Run run = { 0 };
  run.workdir = workdir;
  run.options = options;
  run.progress = progress;
  run.exe = remaster_run_self_exe ();
  run.slots = g_new0 (Task *, options->jobs);
  run.cpu_sets = options->pin_cpus ? partition_cpus (options->jobs) : NULL;
  g_queue_init (&run.pending);
  for (guint i = 0; i < m->segments->len; i++) {
    RemasterSegment *s = g_ptr_array_index (m->segments, i);
    if (s->state != REMASTER_SEGMENT_DONE)
      g_queue_push_tail (&run.pending, GUINT_TO_POINTER (i));
  }

  g_autoptr (GMainContext) ctx = g_main_context_new ();
  g_main_context_push_thread_default (ctx);
  run.loop = g_main_loop_new (ctx, FALSE);
  GSource *sig[2] = { g_unix_signal_source_new (SIGINT),
    g_unix_signal_source_new (SIGTERM)
  };
  for (guint i = 0; i < 2; i++) {
    g_source_set_callback (sig[i], on_signal, &run, NULL);
    g_source_attach (sig[i], ctx);
  }
  remaster_progress_show (progress, TRUE);
  start_next (&run);
  if (run.running)
    g_main_loop_run (run.loop);
  for (guint i = 0; i < 2; i++) {
    g_source_destroy (sig[i]);
    g_source_unref (sig[i]);
  }
  g_main_loop_unref (run.loop);
  g_main_context_pop_thread_default (ctx);
  remaster_progress_break_line (progress);

  g_queue_clear (&run.pending);
  g_free (run.slots);
  g_strfreev (run.cpu_sets);
  g_free (run.exe);
  if (run.error) {
    g_propagate_error (error, run.error);
    return FALSE;
  }
  return TRUE;
}
