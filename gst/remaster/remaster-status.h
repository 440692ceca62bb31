/* remaster-status.h — ehat-remaster --status WORKDIR: the state of a job
 * from its manifest (and the running segments' progress files), from any
 * machine that sees the work directory. */
#ifndef REMASTER_STATUS_H
#define REMASTER_STATUS_H

#include <glib.h>

G_BEGIN_DECLS

gboolean remaster_status_print (const gchar * workdir, gboolean json,
    GError ** error);

G_END_DECLS

#endif
