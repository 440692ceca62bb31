/* remaster-worker.h — one segment: decode → ehatsr → encode into its file.
 *
 * A worker is a separate process (ehat-remaster --worker WORKDIR INDEX),
 * started by the local driver (--jobs) or by a Slurm array task.  It reads
 * everything it needs from the manifest, marks its segment running, and on
 * success renames the finished segment file into place before marking the
 * segment done: a segment marked done always has its complete file. */
#ifndef REMASTER_WORKER_H
#define REMASTER_WORKER_H

#include <glib.h>

G_BEGIN_DECLS

typedef struct
{
  gint device_id;               /* ehatsr device-id; -1: leave the default */
  gboolean progress;            /* JSON progress lines on stdout */
  gint64 started_us;            /* monotonic time the process started */
} RemasterWorkerOptions;

gboolean remaster_worker_run (const gchar * workdir, guint index,
    const RemasterWorkerOptions * options, GError ** error);

G_END_DECLS

#endif
