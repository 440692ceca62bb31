/* remaster-slurm.h — --slurm: the same job, submitted to a Slurm cluster.
 *
 * Only a submission layer: the plan and the segment states live in the
 * manifest in the work directory (which every node must see), each array
 * task runs `ehat-remaster --worker WORKDIR` (the segment index comes from
 * SLURM_ARRAY_TASK_ID), and a join job that depends on the array
 * (afterok) runs `ehat-remaster --join WORKDIR`.  A resubmission
 * (--resume --slurm) sends only the segments that are not done. */
#ifndef REMASTER_SLURM_H
#define REMASTER_SLURM_H

#include <glib.h>

G_BEGIN_DECLS

typedef struct
{
  const gchar *partition;       /* NULL: the cluster's default */
  gint gpus_per_task;           /* 0: CPU workers */
  gint cpus_per_task;           /* 0: 1 */
  const gchar *sbatch_args;     /* extra sbatch options, shell-quoted */
  gboolean keep_workdir;        /* the join job keeps the segment files */
  gboolean json;
} RemasterSlurmOptions;

gboolean remaster_slurm_submit (const gchar * workdir,
    const RemasterSlurmOptions * options, GError ** error);

/* Array indices of `array_job` still queued or running (set of
 * GUINT_TO_POINTER), or NULL when squeue cannot tell (no Slurm here). */
GHashTable *remaster_slurm_queued_indices (const gchar * array_job);

/* Removes WORKDIR/slurm (the task logs). */
void remaster_slurm_cleanup (const gchar * workdir);

/* "1,3,5-7" from sorted indices. */
gchar *remaster_slurm_array_spec (const guint * indices, guint n);

G_END_DECLS

#endif
