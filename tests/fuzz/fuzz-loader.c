/* libFuzzer target: the model loader on untrusted bytes.
 *
 * Every input goes through
 *   1. ehat_model_load_from_bytes() — safetensors parsing, metadata →
 *      configuration, required-tensor checks, float32 conversion — and, when
 *      a model comes back, through its read-only accessors;
 *   2. ehat_safetensors_new_from_bytes() alone, walking every tensor: its
 *      data must lie inside the input, numel × element size must equal its
 *      byte count, lookups by name must agree, and every float tensor is
 *      converted to float32 (ASan checks each byte read).
 * A failure must come back as a GError in the EHAT_ERROR domain with a
 * message; anything else (crash, sanitizer report, g_critical, leak) is a
 * finding.
 *
 * Build: meson setup -Dfuzzing=true with CC=clang (see tests/run-hardening.sh
 * and docs/reliability.md).  Seeds: tests/fuzz/corpus/loader/. */
#include "ehat.h"
#include "ehat-safetensors.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t * data, size_t size);

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  /* A g_critical / g_warning means a broken invariant, not bad input. */
  g_log_set_always_fatal (G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL
      | G_LOG_LEVEL_WARNING);
  return 0;
}

static void
check_error (GError *err)
{
  if (!err || err->domain != EHAT_ERROR || !err->message || !err->message[0])
    abort ();
}

static gsize
elem_size (const EhatStTensor *t)
{
  /* nbytes / numel for every accepted dtype; 0 when numel is 0 */
  return t->numel ? t->nbytes / (gsize) t->numel : 0;
}

static void
walk_model (EhatModel *m)
{
  const EhatConfig *c = ehat_model_get_config (m);
  const char **keys;
  volatile double macs;

  if (!c || c->upscale < 2 || c->upscale > 4 || c->embed_dim < 1
      || c->n_groups < 1 || c->n_groups > EHAT_MAX_GROUPS
      || c->window_size < 1 || c->overlap_window < c->window_size
      || c->mlp_hidden < 1 || ehat_model_get_n_params (m) == 0)
    abort ();
  for (int l = 0; l < c->n_groups; l++)
    if (c->depths[l] < 1 || c->num_heads[l] < 1
        || c->embed_dim % c->num_heads[l] != 0)
      abort ();

  keys = ehat_model_list_metadata (m);
  for (int i = 0; keys && keys[i]; i++)
    if (!ehat_model_get_metadata (m, keys[i]))
      abort ();
  g_free (keys);
  if (ehat_model_get_metadata (m, "\x01no such key"))
    abort ();

  macs = ehat_model_get_macs_per_pixel (m, 1, 1);
  macs = ehat_model_get_macs_per_pixel (m, 64, 48);
  (void) macs;

  /* references are counted */
  ehat_model_unref (ehat_model_ref (m));
}

static void
walk_safetensors (GBytes *bytes, const uint8_t *data, size_t size)
{
  g_autoptr (GError) err = NULL;
  EhatSafetensors *st = ehat_safetensors_new_from_bytes (bytes, &err);
  GHashTableIter it;
  gpointer k, v;
  guint n;

  if (!st) {
    check_error (err);
    return;
  }
  n = ehat_safetensors_get_n_tensors (st);
  if (ehat_safetensors_get (st, n))
    abort ();
  for (guint i = 0; i < n; i++) {
    const EhatStTensor *t = ehat_safetensors_get (st, i);
    gint64 numel = 1;

    if (!t || !t->name || !t->dtype_name || t->ndim < 0
        || t->ndim > EHAT_ST_MAX_DIMS || t->numel < 0)
      abort ();
    for (int d = 0; d < t->ndim; d++) {
      if (t->shape[d] < 0)
        abort ();
      numel *= t->shape[d];
    }
    if (numel != t->numel)
      abort ();
    if (t->nbytes > 0 && (t->data < data || t->data + t->nbytes > data + size))
      abort ();
    if (t->numel > 0 && elem_size (t) * (gsize) t->numel != t->nbytes)
      abort ();
    /* names are unique, so a lookup finds this very tensor */
    if (ehat_safetensors_find (st, t->name) != t)
      abort ();

    if (ehat_dtype_is_float (t->dtype)) {
      float *f = g_new (float, MAX (t->numel, 1));
      volatile float acc = 0.0f;

      ehat_st_tensor_to_f32 (t, f);
      for (gint64 j = 0; j < t->numel; j++)
        acc += f[j];
      (void) acc;
      g_free (f);
    } else if (t->nbytes > 0) {
      /* touch the raw bytes of the other dtypes too */
      volatile guint8 x = 0;
      for (gsize j = 0; j < t->nbytes; j++)
        x ^= t->data[j];
      (void) x;
    }
  }
  g_hash_table_iter_init (&it, ehat_safetensors_get_metadata (st));
  while (g_hash_table_iter_next (&it, &k, &v))
    if (!k || !v)
      abort ();
  ehat_safetensors_free (st);
}

int
LLVMFuzzerTestOneInput (const uint8_t * data, size_t size)
{
  /* the input buffer is exactly `size` bytes, so ASan catches any read
   * past it; the loader copies what it keeps */
  GBytes *bytes = g_bytes_new_static (data, size);
  g_autoptr (GError) err = NULL;
  EhatModel *m = ehat_model_load_from_bytes (bytes, &err);

  if (m) {
    if (err)
      abort ();
    walk_model (m);
    ehat_model_unref (m);
  } else {
    check_error (err);
  }

  walk_safetensors (bytes, data, size);
  g_bytes_unref (bytes);
  return 0;
}
