/* The HAT / EHAT network, defined once over the backend operations. */
#ifndef EHAT_NETWORK_H
#define EHAT_NETWORK_H

#include "ehat-backend.h"

G_BEGIN_DECLS

typedef struct _EhatNetwork EhatNetwork;

/* Uploads (and packs) every weight of the model to the backend. */
EhatNetwork *ehat_network_new (EhatModel *model, EhatBackend *be,
    GError **error);
void ehat_network_free (EhatNetwork *net);

/* The whole reference pipeline (pad, normalise, network, crop) on n host
 * planar images; see ehat_engine_process(). */
gboolean ehat_network_forward (EhatNetwork *net, const float *in, int n,
    int width, int height, float *out, GError **error);

/* The same on one video frame into another, s·w × s·h, with the colour
 * conversions on the backend (its frame_input/frame_output; else
 * EHAT_ERROR_UNSUPPORTED); din/dout from ehat_frame_describe().  Alpha,
 * where both formats have it, is resized bilinearly. */
gboolean ehat_network_forward_frame (EhatNetwork *net, const EhatFrame *in,
    const EhatFrameDesc *din, EhatFrame *out, const EhatFrameDesc *dout,
    GError **error);

/* Bytes of activation workspace the last forward held. */
gsize ehat_network_get_workspace_bytes (EhatNetwork *net);

/* Floats of activation workspace a forward on n images of width×height
 * needs (the arena plan, before anything is allocated). */
gsize ehat_network_estimate_floats (const EhatNetwork *net, int n, int width,
    int height);

/* Relative-position indices of EHAT-SPEC.md §4 (exposed for tests). */
int ehat_rel_index_sa (int ws, int i, int j);
int ehat_rel_index_oca (int ws, int wse, int i, int j);
/* All of them, [ws²][nk] with nk = wse² (overlap) or ws² (g_free it). */
gint32 *ehat_rel_index_table (int ws, int wse, gboolean overlap);

G_END_DECLS

#endif /* EHAT_NETWORK_H */
