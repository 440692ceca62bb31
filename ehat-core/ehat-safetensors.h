/* Bounds-checked safetensors reader and a small writer (internal).
 *
 * The file is untrusted: every length, offset and shape is checked before
 * use, and tensors of any standard dtype are accepted (index buffers are
 * I64); only the model layer decides which dtypes it can use. */
#ifndef EHAT_SAFETENSORS_H
#define EHAT_SAFETENSORS_H

#include <glib.h>

G_BEGIN_DECLS

#define EHAT_ST_MAX_DIMS 8

typedef enum
{
  EHAT_DTYPE_F32,
  EHAT_DTYPE_F16,
  EHAT_DTYPE_BF16,
  EHAT_DTYPE_F64,
  EHAT_DTYPE_I64,
  EHAT_DTYPE_I32,
  EHAT_DTYPE_I16,
  EHAT_DTYPE_I8,
  EHAT_DTYPE_U8,
  EHAT_DTYPE_BOOL,
  EHAT_DTYPE_OTHER,             /* known to safetensors, unusable here */
} EhatDType;

typedef struct
{
  const char *name;
  EhatDType dtype;
  const char *dtype_name;       /* as written in the file, e.g. "F16" */
  int ndim;
  gint64 shape[EHAT_ST_MAX_DIMS];
  gint64 numel;
  const guint8 *data;           /* inside the mapping; may be unaligned */
  gsize nbytes;
} EhatStTensor;

typedef struct _EhatSafetensors EhatSafetensors;

EhatSafetensors *ehat_safetensors_open (const char *path, GError **error);
EhatSafetensors *ehat_safetensors_new_from_bytes (GBytes *bytes,
    GError **error);
void ehat_safetensors_free (EhatSafetensors *st);

guint ehat_safetensors_get_n_tensors (const EhatSafetensors *st);
const EhatStTensor *ehat_safetensors_get (const EhatSafetensors *st, guint i);
const EhatStTensor *ehat_safetensors_find (const EhatSafetensors *st,
    const char *name);
/* __metadata__ as string → string (borrowed; empty table when absent). */
GHashTable *ehat_safetensors_get_metadata (const EhatSafetensors *st);

gboolean ehat_dtype_is_float (EhatDType dtype);
/* Converts a F32/F16/BF16/F64 tensor to float32 (dst holds numel floats). */
void ehat_st_tensor_to_f32 (const EhatStTensor *t, float *dst);

/* Writes F32 tensors (names[i], shapes[i] with ndims[i] dims, data[i]) and
 * optional string metadata, in the safetensors layout (8-aligned header). */
gboolean ehat_safetensors_write_f32 (const char *path, GHashTable *metadata,
    guint n, const char *const *names, const int *ndims,
    const gint64 *const *shapes, const float *const *data, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (EhatSafetensors, ehat_safetensors_free)

G_END_DECLS

#endif /* EHAT_SAFETENSORS_H */
