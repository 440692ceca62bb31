/* Model internals shared by the network and the backends. */
#ifndef EHAT_MODEL_PRIVATE_H
#define EHAT_MODEL_PRIVATE_H

#include "ehat.h"

G_BEGIN_DECLS

/* Parses and checks the __metadata__ configuration (DESIGN.md §2). */
gboolean ehat_config_from_metadata (GHashTable *metadata, EhatConfig *cfg,
    GError **error);

/* Number of branch weights (BSA) the configuration consumes. */
int ehat_config_n_w0 (const EhatConfig *cfg);
int ehat_config_n_w1 (const EhatConfig *cfg);

/* A float32 copy of a tensor the configuration requires.  Only valid for
 * names the loader has checked (every tensor of EHAT-SPEC.md §7 that the
 * configuration implies, with its shape); returns NULL otherwise. */
const float *ehat_model_get_f32 (const EhatModel *model, const char *name);
/* The same with printf-style name formatting. */
const float *ehat_model_get_f32_printf (const EhatModel *model,
    const char *fmt, ...) G_GNUC_PRINTF (2, 3);

G_END_DECLS

#endif /* EHAT_MODEL_PRIVATE_H */
