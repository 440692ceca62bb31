/* remaster-error.h — the error domain of ehat-remaster.
 *
 * Every failure a user can cause (bad arguments, unreadable input, a model
 * that does not load, a work directory that belongs to another job) is a
 * GError in this domain, reported by main() with a non-zero exit status;
 * nothing in the program aborts on bad input. */
#ifndef REMASTER_ERROR_H
#define REMASTER_ERROR_H

#include <glib.h>

G_BEGIN_DECLS

#define REMASTER_ERROR (remaster_error_quark ())
GQuark remaster_error_quark (void);

typedef enum
{
  REMASTER_ERROR_ARGS,          /* invalid command line */
  REMASTER_ERROR_INPUT,         /* input missing, unreadable, no video */
  REMASTER_ERROR_MODEL,         /* model file does not load */
  REMASTER_ERROR_ELEMENT,       /* a GStreamer element is not installed */
  REMASTER_ERROR_PIPELINE,      /* a pipeline failed (decode, encode, mux) */
  REMASTER_ERROR_MANIFEST,      /* work directory / manifest problem */
  REMASTER_ERROR_VERIFY,        /* frame counts or timestamps do not add up */
  REMASTER_ERROR_BUSY,          /* another process holds the work directory */
  REMASTER_ERROR_WORKER,        /* a worker process failed */
  REMASTER_ERROR_SLURM,         /* sbatch / squeue failed */
} RemasterError;

G_END_DECLS

#endif
