/* remaster-run.h — the local driver: runs the pending segments in --jobs
 * worker processes on this machine, one GPU (--devices) or a share of the
 * CPU cores each, and feeds their progress to the progress display. */
#ifndef REMASTER_RUN_H
#define REMASTER_RUN_H

#include "remaster-progress.h"

G_BEGIN_DECLS

typedef struct
{
  guint jobs;                   /* worker processes at a time */
  const gint *devices;          /* --devices, or NULL */
  guint n_devices;
  gboolean pin_cpus;            /* CPU workers: give each its own cores */
} RemasterRunOptions;

/* Before a (re)run: segments left running by a killed run or failed go
 * back to pending, done segments whose file is gone or has the wrong size
 * too, stale temporary files are removed.  *redone: how many segments
 * were in progress (or failed) and will be redone, *reused: how many are
 * kept. */
gboolean remaster_run_prepare (const gchar * workdir, guint * redone,
    guint * reused, GError ** error);

/* Runs every pending segment; fails (after letting running workers
 * finish) as soon as one segment fails. */
gboolean remaster_run_local (const gchar * workdir,
    const RemasterRunOptions * options, RemasterProgress * progress,
    GError ** error);

/* NULL when ehatsr with `backend` (auto or cuda) would run `model` on a
 * GPU here, else why not (free it). */
gchar *remaster_run_gpu_unusable (const gchar * model,
    const gchar * backend);

/* This program's own path, for spawning workers. */
gchar *remaster_run_self_exe (void);

G_END_DECLS

#endif
