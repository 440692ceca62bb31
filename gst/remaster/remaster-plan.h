/* remaster-plan.h — turning a command line into a job: check the input,
 * the output path, the model and the encoder, probe the input, cut it into
 * segments and write the manifest.  Also the check that a --resume is
 * resuming the same job. */
#ifndef REMASTER_PLAN_H
#define REMASTER_PLAN_H

#include "remaster-manifest.h"

G_BEGIN_DECLS

typedef struct
{
  const gchar *input;
  const gchar *output;
  const gchar *model;           /* NULL: ehatsr's default model */
  const gchar *backend;         /* auto, cuda, cpu */
  const gchar *precision;       /* auto, fp32, fp16, bf16 */
  const gchar *encoder;         /* NULL: remaster_encoder_default() */
  gint quality;                 /* -1: encoder default */
  gint scale_to_width;          /* 0: none */
  gint scale_to_height;
  gdouble segment_seconds;      /* <= 0: the default (60 s) */
  gboolean force;               /* overwrite an existing output */
  gint ensemble;                /* ehatsr ensemble: 1, 2, 4, 8; 0: not given */
  gint tile_width;              /* --tile-size; 0: automatic */
  gint tile_height;
} RemasterPlanOptions;

#define REMASTER_DEFAULT_SEGMENT_SECONDS 60.0

/* Checks that don't need the input's content (fast; before a work
 * directory is created). */
gboolean remaster_plan_check (const RemasterPlanOptions * options,
    GError ** error);

/* Probes and writes WORKDIR/manifest.json; returns the manifest. */
RemasterManifest *remaster_plan_create (const gchar * workdir,
    const RemasterPlanOptions * options, GError ** error);

/* For --resume: the manifest in WORKDIR must describe the same input
 * (unchanged on disk), output and settings (those given explicitly). */
gboolean remaster_plan_matches (const RemasterManifest * manifest,
    const RemasterPlanOptions * options, GError ** error);

/* The absolute model path ehatsr would use (its default when `model` is
 * NULL), checked by loading it; *scale gets the model's scale. */
gchar *remaster_plan_resolve_model (const gchar * model, gint * scale,
    GError ** error);

G_END_DECLS

#endif
