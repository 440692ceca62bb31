/* remaster-slurm.c — sbatch a job array of workers and an afterok join. */
#include "remaster-slurm.h"
#include "remaster-error.h"
#include "remaster-manifest.h"
#include "remaster-progress.h"
#include "remaster-run.h"

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <string.h>

gchar *
remaster_slurm_array_spec (const guint * idx, guint n)
{
  GString *s = g_string_new (NULL);
  for (guint i = 0; i < n;) {
    guint j = i;
    while (j + 1 < n && idx[j + 1] == idx[j] + 1)
      j++;
    if (s->len)
      g_string_append_c (s, ',');
    if (j == i)
      g_string_append_printf (s, "%u", idx[i]);
    else
      g_string_append_printf (s, "%u-%u", idx[i], idx[j]);
    i = j + 1;
  }
  return g_string_free (s, FALSE);
}

void
remaster_slurm_cleanup (const gchar * workdir)
{
  g_autofree gchar *dir = g_build_filename (workdir, "slurm", NULL);
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  const gchar *name;
  while (d && (name = g_dir_read_name (d)))
    if (g_str_has_suffix (name, ".log")) {
      g_autofree gchar *p = g_build_filename (dir, name, NULL);
      g_unlink (p);
    }
  g_rmdir (dir);
}

/* Runs a Slurm command; its stdout, or NULL with the command's stderr in
 * the error. */
static gchar *
run_command (const gchar * const *argv, GError ** error)
{
  GError *err = NULL;
  g_autoptr (GSubprocess) p = g_subprocess_newv (argv,
      G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE, &err);
  if (!p) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_SLURM,
        "cannot run %s: %s (is Slurm installed and on PATH?)", argv[0],
        err->message);
    g_error_free (err);
    return NULL;
  }
  gchar *out = NULL, *errs = NULL;
  if (!g_subprocess_communicate_utf8 (p, NULL, NULL, &out, &errs, &err)) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_SLURM,
        "%s: %s", argv[0], err->message);
    g_error_free (err);
    g_free (out);
    g_free (errs);
    return NULL;
  }
  if (!g_subprocess_get_if_exited (p) || g_subprocess_get_exit_status (p)) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_SLURM,
        "%s failed: %s", argv[0], errs ? g_strstrip (errs) : "");
    g_free (out);
    g_free (errs);
    return NULL;
  }
  g_free (errs);
  return out;
}

/* Job ids of a job's tasks still queued or running (empty: none). */
static gchar *
queued_tasks (const gchar * job)
{
  const gchar *argv[] = { "squeue", "-h", "-r", "-j", job, "-o", "%i %T",
    NULL
  };
  /* squeue fails once Slurm has forgotten the job: nothing queued. */
  gchar *out = run_command (argv, NULL);
  if (!out)
    return g_strdup ("");
  return g_strstrip (out);
}

GHashTable *
remaster_slurm_queued_indices (const gchar * array_job)
{
  const gchar *argv[] = { "squeue", "-h", "-r", "-j", array_job, "-o", "%i",
    NULL
  };
  GError *err = NULL;
  g_autofree gchar *out = run_command (argv, &err);
  if (!out) {
    /* "Invalid job id": Slurm has forgotten a finished job, nothing is
     * queued; anything else (no squeue, no controller): unknown. */
    gboolean forgotten = strstr (err->message, "Invalid job id") != NULL;
    g_error_free (err);
    return forgotten ? g_hash_table_new (NULL, NULL) : NULL;
  }
  GHashTable *set = g_hash_table_new (NULL, NULL);
  g_auto (GStrv) lines = g_strsplit (out, "\n", -1);
  for (guint i = 0; lines[i]; i++) {
    const gchar *u = strchr (lines[i], '_');
    if (u && g_ascii_isdigit (u[1]))
      g_hash_table_add (set, GUINT_TO_POINTER ((guint) g_ascii_strtoull (u + 1,
                  NULL, 10)));
  }
  return set;
}

static gchar *
sbatch (GPtrArray * args, const gchar * wrap, GError ** error)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_ptr_array_add (argv, (gpointer) "sbatch");
  g_ptr_array_add (argv, (gpointer) "--parsable");
  for (guint i = 0; i < args->len; i++)
    g_ptr_array_add (argv, args->pdata[i]);
  g_ptr_array_add (argv, (gpointer) "--wrap");
  g_ptr_array_add (argv, (gpointer) wrap);
  g_ptr_array_add (argv, NULL);
  g_autofree gchar *out = run_command ((const gchar * const *) argv->pdata,
      error);
  if (!out)
    return NULL;
  /* "<jobid>[;<cluster>]" */
  g_strstrip (out);
  gchar *semi = strchr (out, ';');
  if (semi)
    *semi = 0;
  if (!*out) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_SLURM,
        "sbatch printed no job id");
    return NULL;
  }
  return g_strdup (out);
}

typedef struct
{
  const gchar *workdir;
  GArray *pending;
} ResetData;

static gboolean
reset_for_submit (RemasterManifest * m, gpointer user_data, GError ** error)
{
  ResetData *d = user_data;
  for (guint i = 0; i < m->segments->len; i++) {
    RemasterSegment *s = g_ptr_array_index (m->segments, i);
    g_autofree gchar *path = remaster_manifest_segment_path (d->workdir, i);
    if (s->state == REMASTER_SEGMENT_DONE
        && g_file_test (path, G_FILE_TEST_IS_REGULAR))
      continue;
    s->state = REMASTER_SEGMENT_PENDING;
    g_array_append_val (d->pending, i);
  }
  m->joined = FALSE;
  return TRUE;
}

typedef struct
{
  const gchar *array;
  const gchar *join;
} JobIds;

static gboolean
record_jobs (RemasterManifest * m, gpointer user_data, GError ** error)
{
  JobIds *ids = user_data;
  g_free (m->slurm_array_job);
  g_free (m->slurm_join_job);
  m->slurm_array_job = g_strdup (ids->array);
  m->slurm_join_job = g_strdup (ids->join);
  return TRUE;
}

gboolean
remaster_slurm_submit (const gchar * workdir, const RemasterSlurmOptions * o,
    GError ** error)
{
  g_autoptr (RemasterManifest) m = remaster_manifest_load (workdir, error);
  if (!m)
    return FALSE;
  /* A previous submission must be over: resubmitting segments that are
   * still queued would run them twice. */
  if (m->slurm_array_job) {
    g_autofree gchar *left = queued_tasks (m->slurm_array_job);
    if (*left) {
      g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_SLURM,
          "Slurm job %s of this work directory still has tasks queued or "
          "running:\n%s\nwait for them (ehat-remaster --status %s) or "
          "scancel %s, then --resume", m->slurm_array_job, left, workdir,
          m->slurm_array_job);
      return FALSE;
    }
  }
  if (m->slurm_join_job) {
    /* A join whose afterok can never be satisfied stays queued forever. */
    g_autofree gchar *left = queued_tasks (m->slurm_join_job);
    if (*left) {
      const gchar *argv[] = { "scancel", m->slurm_join_job, NULL };
      g_autofree gchar *out = run_command (argv, error);
      if (!out)
        return FALSE;
    }
  }

  g_autoptr (GArray) pending = g_array_new (FALSE, FALSE, sizeof (guint));
  ResetData rd = { workdir, pending };
  if (!remaster_manifest_update (workdir, reset_for_submit, &rd, error))
    return FALSE;

  g_autofree gchar *logdir = g_build_filename (workdir, "slurm", NULL);
  g_mkdir_with_parents (logdir, 0755);
  g_autofree gchar *exe = remaster_run_self_exe ();
  g_autofree gchar *qexe = g_shell_quote (exe);
  g_autofree gchar *qwork = g_shell_quote (workdir);

  g_auto (GStrv) extra = NULL;
  if (o->sbatch_args && *o->sbatch_args) {
    GError *err = NULL;
    if (!g_shell_parse_argv (o->sbatch_args, NULL, &extra, &err)) {
      g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_ARGS,
          "--sbatch-args: %s", err->message);
      g_error_free (err);
      return FALSE;
    }
  }
  g_autoptr (GPtrArray) common = g_ptr_array_new_with_free_func (g_free);
  if (o->partition)
    g_ptr_array_add (common, g_strdup_printf ("--partition=%s",
            o->partition));
  for (guint i = 0; extra && extra[i]; i++)
    g_ptr_array_add (common, g_strdup (extra[i]));

  g_autofree gchar *array_id = NULL;
  if (pending->len) {
    g_autoptr (GPtrArray) args = g_ptr_array_new_with_free_func (g_free);
    g_autofree gchar *spec = remaster_slurm_array_spec ((guint *)
        pending->data, pending->len);
    g_ptr_array_add (args, g_strdup ("--job-name=ehat-remaster"));
    g_ptr_array_add (args, g_strdup_printf ("--array=%s", spec));
    g_ptr_array_add (args, g_strdup_printf ("--cpus-per-task=%d",
            o->cpus_per_task > 0 ? o->cpus_per_task : 1));
    if (o->gpus_per_task > 0)
      g_ptr_array_add (args, g_strdup_printf ("--gpus-per-task=%d",
              o->gpus_per_task));
    g_ptr_array_add (args, g_strdup_printf ("--output=%s/seg-%%a.log",
            logdir));
    for (guint i = 0; i < common->len; i++)
      g_ptr_array_add (args, g_strdup (common->pdata[i]));
    /* The worker takes its segment from SLURM_ARRAY_TASK_ID; with a GPU
     * per task Slurm's CUDA_VISIBLE_DEVICES makes it device 0. */
    g_autofree gchar *wrap = g_strdup_printf ("exec %s --worker %s%s", qexe,
        qwork, o->gpus_per_task > 0 ? " --device-id 0" : "");
    array_id = sbatch (args, wrap, error);
    if (!array_id)
      return FALSE;
  }

  g_autoptr (GPtrArray) args = g_ptr_array_new_with_free_func (g_free);
  g_ptr_array_add (args, g_strdup ("--job-name=ehat-remaster-join"));
  g_ptr_array_add (args, g_strdup ("--cpus-per-task=1"));
  g_ptr_array_add (args, g_strdup_printf ("--output=%s/join.log", logdir));
  if (array_id)
    g_ptr_array_add (args, g_strdup_printf ("--dependency=afterok:%s",
            array_id));
  for (guint i = 0; i < common->len; i++)
    g_ptr_array_add (args, g_strdup (common->pdata[i]));
  g_autofree gchar *wrap = g_strdup_printf ("exec %s --join %s%s", qexe,
      qwork, o->keep_workdir ? " --keep-workdir" : "");
  g_autofree gchar *join_id = sbatch (args, wrap, error);
  if (!join_id) {
    if (array_id) {
      const gchar *argv[] = { "scancel", array_id, NULL };
      g_free (run_command (argv, NULL));
    }
    return FALSE;
  }

  JobIds ids = { array_id, join_id };
  if (!remaster_manifest_update (workdir, record_jobs, &ids, error))
    return FALSE;
  if (o->json) {
    g_autofree gchar *qw = remaster_json_quote (workdir);
    g_print ("{\"event\":\"submitted\",\"workdir\":%s,\"array-job\":%s%s%s,"
        "\"join-job\":\"%s\",\"segments\":%u,\"submitted\":%u}\n", qw,
        array_id ? "\"" : "", array_id ? array_id : "null",
        array_id ? "\"" : "", join_id, m->segments->len, pending->len);
  } else {
    if (array_id)
      g_print ("submitted Slurm array job %s (%u of %u segments) and join "
          "job %s\n", array_id, pending->len, m->segments->len, join_id);
    else
      g_print ("all segments are done; submitted join job %s\n", join_id);
    g_print ("follow it with: ehat-remaster --status %s\n", workdir);
  }
  return TRUE;
}
