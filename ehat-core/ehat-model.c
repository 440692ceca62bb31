/* Model loading: safetensors file → checked configuration → float32 weights.
 *
 * The configuration (from __metadata__) implies the exact list of tensors
 * the network reads and their shapes (EHAT-SPEC.md §7).  The loader checks
 * every one of them for presence, float dtype and shape before anything
 * runs, copies each into an owned float32 array and then lets the file go,
 * so a model never keeps a mapping (or the caller's bytes) alive and the
 * network and backends can index the arrays without further checks. */
#include "ehat-model-private.h"

#include "ehat-safetensors.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define BSA_W0 "__branchattentionmodule__.weight_0"
#define BSA_W1 "__branchattentionmodule__.weight_1"
#define APE "absolute_pos_embed"

struct _EhatModel
{
  gint ref_count;
  EhatConfig cfg;
  GHashTable *tensors;          /* name → float *, both owned */
  GHashTable *metadata;         /* string → string, owned copy */
  guint64 n_params;
};

/* One tensor the configuration requires. */
typedef struct
{
  char *name;
  int ndim;
  gint64 shape[4];
  /* 1-D vectors that only need to be long enough (the BSA weights) */
  gboolean at_least;
} Req;

static void
req_clear (gpointer p)
{
  g_free (((Req *) p)->name);
}

static void
add_req (GArray *reqs, gboolean at_least, int ndim, const gint64 *shape,
    const char *fmt, ...) G_GNUC_PRINTF (5, 6);

static void
add_req (GArray *reqs, gboolean at_least, int ndim, const gint64 *shape,
    const char *fmt, ...)
{
  Req r = { 0 };
  va_list ap;

  va_start (ap, fmt);
  r.name = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  r.ndim = ndim;
  r.at_least = at_least;
  memcpy (r.shape, shape, ndim * sizeof (gint64));
  g_array_append_val (reqs, r);
}

#define SHAPE(...) ((const gint64[]) { __VA_ARGS__ })

/* weight [out, in, k, k] and bias [out] */
static void
add_conv (GArray *reqs, const char *prefix, gint64 out, gint64 in, gint64 k)
{
  add_req (reqs, FALSE, 4, SHAPE (out, in, k, k), "%s.weight", prefix);
  add_req (reqs, FALSE, 1, SHAPE (out), "%s.bias", prefix);
}

/* weight [out, in] and bias [out] */
static void
add_linear (GArray *reqs, const char *prefix, gint64 out, gint64 in)
{
  add_req (reqs, FALSE, 2, SHAPE (out, in), "%s.weight", prefix);
  add_req (reqs, FALSE, 1, SHAPE (out), "%s.bias", prefix);
}

static void
add_norm (GArray *reqs, const char *prefix, gint64 c)
{
  add_req (reqs, FALSE, 1, SHAPE (c), "%s.weight", prefix);
  add_req (reqs, FALSE, 1, SHAPE (c), "%s.bias", prefix);
}

/* The state-dict entries of EHAT-SPEC.md §7 that `c` implies, except the
 * optional absolute_pos_embed (which, when present, fixes c->ape before
 * this runs). */
static GArray *
required_tensors (const EhatConfig *c)
{
  GArray *reqs = g_array_new (FALSE, TRUE, sizeof (Req));
  gint64 C = c->embed_dim, ws = c->window_size, wse = c->overlap_window;
  gint64 cm = C / c->compress_ratio, sq = C / c->squeeze_factor;
  gint64 hid = c->mlp_hidden;

  g_array_set_clear_func (reqs, req_clear);

  add_conv (reqs, "conv_first", C, 3, 3);
  add_norm (reqs, "patch_embed.norm", C);
  for (int l = 0; l < c->n_groups; l++) {
    gint64 nh = c->num_heads[l];
    g_autofree char *op =
        g_strdup_printf ("layers.%d.residual_group.overlap_attn", l);
    g_autofree char *opn1 = g_strconcat (op, ".norm1", NULL);
    g_autofree char *opqkv = g_strconcat (op, ".qkv", NULL);
    g_autofree char *opproj = g_strconcat (op, ".proj", NULL);
    g_autofree char *opn2 = g_strconcat (op, ".norm2", NULL);
    g_autofree char *opfc1 = g_strconcat (op, ".mlp.fc1", NULL);
    g_autofree char *opfc2 = g_strconcat (op, ".mlp.fc2", NULL);
    g_autofree char *conv = g_strdup_printf ("layers.%d.conv", l);

    for (int i = 0; i < c->depths[l]; i++) {
      g_autofree char *p =
          g_strdup_printf ("layers.%d.residual_group.blocks.%d", l, i);
      g_autofree char *n1 = g_strconcat (p, ".norm1", NULL);
      g_autofree char *qkv = g_strconcat (p, ".attn.qkv", NULL);
      g_autofree char *proj = g_strconcat (p, ".attn.proj", NULL);
      g_autofree char *cab0 = g_strconcat (p, ".conv_block.cab.0", NULL);
      g_autofree char *cab2 = g_strconcat (p, ".conv_block.cab.2", NULL);
      g_autofree char *ca1 =
          g_strconcat (p, ".conv_block.cab.3.attention.1", NULL);
      g_autofree char *ca3 =
          g_strconcat (p, ".conv_block.cab.3.attention.3", NULL);
      g_autofree char *n2 = g_strconcat (p, ".norm2", NULL);
      g_autofree char *fc1 = g_strconcat (p, ".mlp.fc1", NULL);
      g_autofree char *fc2 = g_strconcat (p, ".mlp.fc2", NULL);

      add_norm (reqs, n1, C);
      add_req (reqs, FALSE, 2, SHAPE ((2 * ws - 1) * (2 * ws - 1), nh),
          "%s.attn.relative_position_bias_table", p);
      add_linear (reqs, qkv, 3 * C, C);
      add_linear (reqs, proj, C, C);
      add_conv (reqs, cab0, cm, C, 3);
      add_conv (reqs, cab2, C, cm, 3);
      add_conv (reqs, ca1, sq, C, 1);
      add_conv (reqs, ca3, C, sq, 1);
      add_norm (reqs, n2, C);
      add_linear (reqs, fc1, hid, C);
      add_linear (reqs, fc2, C, hid);
    }
    add_norm (reqs, opn1, C);
    add_req (reqs, FALSE, 2, SHAPE ((ws + wse - 1) * (ws + wse - 1), nh),
        "%s.relative_position_bias_table", op);
    add_linear (reqs, opqkv, 3 * C, C);
    add_linear (reqs, opproj, C, C);
    add_norm (reqs, opn2, C);
    add_linear (reqs, opfc1, hid, C);
    add_linear (reqs, opfc2, C, hid);
    add_conv (reqs, conv, C, C, 3);
  }
  add_norm (reqs, "norm", C);
  add_conv (reqs, "conv_after_body", C, C, 3);
  add_conv (reqs, "conv_before_upsample.0", 64, C, 3);
  if (c->upscale == 4) {
    add_conv (reqs, "upsample.0", 256, 64, 3);
    add_conv (reqs, "upsample.2", 256, 64, 3);
  } else {
    add_conv (reqs, "upsample.0", 64 * c->upscale * c->upscale, 64, 3);
  }
  add_conv (reqs, "conv_last", 3, 64, 3);

  if (c->arch == EHAT_ARCH_EHAT) {
    add_req (reqs, TRUE, 1, SHAPE (ehat_config_n_w0 (c)), BSA_W0);
    add_req (reqs, TRUE, 1, SHAPE (ehat_config_n_w1 (c)), BSA_W1);
  }
  if (c->danet) {
    add_conv (reqs, "danet.pam.query_conv", C / 8, C, 1);
    add_conv (reqs, "danet.pam.key_conv", C / 8, C, 1);
    add_conv (reqs, "danet.pam.value_conv", C, C, 1);
    add_req (reqs, FALSE, 1, SHAPE (1), "danet.pam.gamma");
    add_req (reqs, FALSE, 1, SHAPE (1), "danet.cam.gamma");
  }
  return reqs;
}

static char *
shape_str (int ndim, const gint64 *shape)
{
  GString *s = g_string_new ("[");

  for (int i = 0; i < ndim; i++)
    g_string_append_printf (s, "%s%" G_GINT64_FORMAT, i ? ", " : "",
        shape[i]);
  g_string_append_c (s, ']');
  return g_string_free (s, FALSE);
}

static gboolean
check_float (const char *file, const EhatStTensor *t, GError **error)
{
  if (ehat_dtype_is_float (t->dtype))
    return TRUE;
  g_set_error (error, EHAT_ERROR, EHAT_ERROR_TENSOR,
      "model %s: tensor '%s' has dtype %s (F32, F16, BF16 or F64 needed)",
      file, t->name, t->dtype_name);
  return FALSE;
}

/* Copies a checked tensor into the model as float32. */
static gboolean
take_tensor (EhatModel *m, const char *file, const EhatStTensor *t,
    GError **error)
{
  float *buf = g_try_new (float, MAX (t->numel, 1));

  if (!buf) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY,
        "model %s: no memory for tensor '%s' (%" G_GINT64_FORMAT
        " elements)", file, t->name, t->numel);
    return FALSE;
  }
  ehat_st_tensor_to_f32 (t, buf);
  g_hash_table_replace (m->tensors, g_strdup (t->name), buf);
  m->n_params += (guint64) t->numel;
  return TRUE;
}

static gboolean
load_ape (EhatModel *m, const char *file, const EhatSafetensors *st,
    GError **error)
{
  const EhatStTensor *t = ehat_safetensors_find (st, APE);
  gint64 side;

  if (!t)
    return TRUE;
  if (!check_float (file, t, error))
    return FALSE;
  if (t->ndim != 3 || t->shape[0] != 1 || t->shape[1] < 1
      || t->shape[1] > G_MAXINT || t->shape[2] != m->cfg.embed_dim) {
    g_autofree char *found = shape_str (t->ndim, t->shape);
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_TENSOR,
        "model %s: tensor '" APE "' has shape %s, expected [1, N, %d]",
        file, found, m->cfg.embed_dim);
    return FALSE;
  }
  /* HAT's embedding covers an img_size × img_size grid, and the input is
   * padded to a multiple of the window size before it is added: any other
   * token count fits no input the network can take */
  side = (gint64) sqrt ((double) t->shape[1]);
  while (side * side > t->shape[1])
    side--;
  while ((side + 1) * (side + 1) <= t->shape[1])
    side++;
  if (side * side != t->shape[1] || side % m->cfg.window_size) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_TENSOR,
        "model %s: tensor '" APE "' has %" G_GINT64_FORMAT " tokens, not "
        "the square of a multiple of the window size %d (an img_size × "
        "img_size grid)", file, t->shape[1], m->cfg.window_size);
    return FALSE;
  }
  m->cfg.ape = TRUE;
  m->cfg.ape_tokens = (int) t->shape[1];
  m->cfg.ape_size = (int) side;
  return take_tensor (m, file, t, error);
}

static gboolean
load_tensors (EhatModel *m, const char *file, const EhatSafetensors *st,
    GError **error)
{
  g_autoptr (GArray) reqs = NULL;

  if (!load_ape (m, file, st, error))
    return FALSE;

  reqs = required_tensors (&m->cfg);
  for (guint i = 0; i < reqs->len; i++) {
    const Req *r = &g_array_index (reqs, Req, i);
    const EhatStTensor *t = ehat_safetensors_find (st, r->name);
    gboolean shape_ok;

    if (!t) {
      g_set_error (error, EHAT_ERROR, EHAT_ERROR_TENSOR,
          "model %s: missing tensor '%s'", file, r->name);
      return FALSE;
    }
    if (!check_float (file, t, error))
      return FALSE;
    if (r->at_least) {
      shape_ok = t->ndim == 1 && t->shape[0] >= r->shape[0];
    } else {
      shape_ok = t->ndim == r->ndim;
      for (int d = 0; shape_ok && d < r->ndim; d++)
        shape_ok = t->shape[d] == r->shape[d];
    }
    if (!shape_ok) {
      g_autofree char *want = shape_str (r->ndim, r->shape);
      g_autofree char *found = shape_str (t->ndim, t->shape);
      g_set_error (error, EHAT_ERROR, EHAT_ERROR_TENSOR,
          "model %s: tensor '%s' has shape %s, expected %s%s", file, r->name,
          found, r->at_least ? "at least " : "", want);
      return FALSE;
    }
    if (!take_tensor (m, file, t, error))
      return FALSE;
  }

  /* index buffers, attention masks, BSA aliases, anything else */
  for (guint i = 0; i < ehat_safetensors_get_n_tensors (st); i++) {
    const EhatStTensor *t = ehat_safetensors_get (st, i);
    if (!g_hash_table_contains (m->tensors, t->name))
      g_debug ("model %s: ignoring tensor '%s'", file, t->name);
  }
  return TRUE;
}

static EhatModel *
load (EhatSafetensors *st, const char *file, GError **error)
{
  EhatModel *m = g_new0 (EhatModel, 1);
  GHashTable *md = ehat_safetensors_get_metadata (st);
  GHashTableIter it;
  gpointer k, v;

  g_atomic_int_set (&m->ref_count, 1);
  m->tensors = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
      g_free);
  m->metadata = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
      g_free);
  g_hash_table_iter_init (&it, md);
  while (g_hash_table_iter_next (&it, &k, &v))
    g_hash_table_insert (m->metadata, g_strdup (k), g_strdup (v));

  if (!ehat_config_from_metadata (md, &m->cfg, error)) {
    g_prefix_error (error, "model %s: ", file);
    ehat_model_unref (m);
    return NULL;
  }
  if (!load_tensors (m, file, st, error)) {
    ehat_model_unref (m);
    return NULL;
  }
  return m;
}

EhatModel *
ehat_model_load (const char *path, GError **error)
{
  g_autoptr (EhatSafetensors) st = NULL;

  g_return_val_if_fail (path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  st = ehat_safetensors_open (path, error);
  if (!st)
    return NULL;
  return load (st, path, error);
}

/* The weights are copied out, so `bytes` need not outlive the call (the
 * loader holds its own reference only while it reads). */
EhatModel *
ehat_model_load_from_bytes (GBytes *bytes, GError **error)
{
  g_autoptr (EhatSafetensors) st = NULL;

  g_return_val_if_fail (bytes != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  st = ehat_safetensors_new_from_bytes (bytes, error);
  if (!st)
    return NULL;
  return load (st, "<memory>", error);
}

EhatModel *
ehat_model_ref (EhatModel *model)
{
  g_return_val_if_fail (model != NULL, NULL);
  g_atomic_int_inc (&model->ref_count);
  return model;
}

void
ehat_model_unref (EhatModel *model)
{
  if (!model)
    return;
  if (!g_atomic_int_dec_and_test (&model->ref_count))
    return;
  g_hash_table_unref (model->tensors);
  g_hash_table_unref (model->metadata);
  g_free (model);
}

const EhatConfig *
ehat_model_get_config (const EhatModel *model)
{
  g_return_val_if_fail (model != NULL, NULL);
  return &model->cfg;
}

const char *
ehat_model_get_metadata (const EhatModel *model, const char *key)
{
  g_return_val_if_fail (model != NULL, NULL);
  g_return_val_if_fail (key != NULL, NULL);
  return g_hash_table_lookup (model->metadata, key);
}

static int
cmp_str_ptr (const void *a, const void *b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

const char **
ehat_model_list_metadata (const EhatModel *model)
{
  const char **keys;
  guint n;

  g_return_val_if_fail (model != NULL, NULL);
  keys = (const char **) g_hash_table_get_keys_as_array (model->metadata, &n);
  qsort (keys, n, sizeof (char *), cmp_str_ptr);
  return keys;
}

guint64
ehat_model_get_n_params (const EhatModel *model)
{
  g_return_val_if_fail (model != NULL, 0);
  return model->n_params;
}

/* Multiply-adds of one forward pass on the padded H×W frame (H, W rounded
 * up to multiples of ws), divided by the real width·height.  With C the
 * width, N = H·W tokens, hid = C·mlp_ratio, cm = C/compress_ratio,
 * sq = C/squeeze_factor, wse the OCAB key window, r the scale, counted:
 *
 *   conv_first                 N · 27C
 *   per HAB                    N · (3C² + C²                 qkv, proj
 *                                   + 2·ws²·C                QKᵀ and AV
 *                                   + 2·9·C·cm               CAB convs
 *                                   + 2·C·hid)               MLP
 *                              + 2·C·sq                      CA 1×1s (once)
 *   per OCAB                   N · (4C² + 2·wse²·C + 2·C·hid)  (all wse²
 *                                                             keys counted,
 *                                                             zero pads too)
 *   per group conv             N · 9C²
 *   DANet (if any)             N · (2·C·C/8 + C²             Q, K, V 1×1s
 *                                   + N·C/8 + N·C            QᵀK, S·V
 *                                   + 2C²)                   E = FFᵀ, A·F
 *   conv_after_body            N · 9C²
 *   conv_before_upsample       N · 9·C·64
 *   upsample                   N · 9·64·256 (×2), N · 9·64·576 (×3),
 *                              N · 9·64·256·(1 + 4) (×4: second at 2×)
 *   conv_last                  N · r² · 9·64·3
 *
 * Norms, activations, softmax and the branch-weight sums are not
 * multiply-adds and are left out. */
double
ehat_model_get_macs_per_pixel (const EhatModel *model, int width, int height)
{
  const EhatConfig *c;
  double C, N, ws2, wse2, hid, cm, sq, per_tok = 0.0, once = 0.0;
  int ws, r, H, W;

  g_return_val_if_fail (model != NULL, 0.0);
  if (width <= 0 || height <= 0)
    return 0.0;

  c = &model->cfg;
  ws = c->window_size;
  r = c->upscale;
  H = (height + ws - 1) / ws * ws;
  W = (width + ws - 1) / ws * ws;
  N = (double) H * W;
  C = c->embed_dim;
  ws2 = (double) ws * ws;
  wse2 = (double) c->overlap_window * c->overlap_window;
  hid = c->mlp_hidden;
  cm = c->embed_dim / c->compress_ratio;
  sq = c->embed_dim / c->squeeze_factor;

  per_tok += 27.0 * C;
  for (int l = 0; l < c->n_groups; l++) {
    double hab = 4.0 * C * C + 2.0 * ws2 * C + 18.0 * C * cm + 2.0 * C * hid;
    per_tok += c->depths[l] * hab;
    once += c->depths[l] * 2.0 * C * sq;
    per_tok += 4.0 * C * C + 2.0 * wse2 * C + 2.0 * C * hid;
    per_tok += 9.0 * C * C;
  }
  if (c->danet)
    per_tok += 2.0 * C * (double) (c->embed_dim / 8) + C * C
        + N * (double) (c->embed_dim / 8) + N * C + 2.0 * C * C;
  per_tok += 9.0 * C * C;
  per_tok += 9.0 * C * 64;
  if (r == 4)
    per_tok += 9.0 * 64 * 256 * (1 + 4);
  else
    per_tok += 9.0 * 64 * 64 * r * r;
  per_tok += (double) r * r * 9 * 64 * 3;

  return (N * per_tok + once) / ((double) width * height);
}

const float *
ehat_model_get_f32 (const EhatModel *model, const char *name)
{
  g_return_val_if_fail (model != NULL, NULL);
  g_return_val_if_fail (name != NULL, NULL);
  return g_hash_table_lookup (model->tensors, name);
}

const float *
ehat_model_get_f32_printf (const EhatModel *model, const char *fmt, ...)
{
  g_autofree char *name = NULL;
  va_list ap;

  g_return_val_if_fail (model != NULL, NULL);
  g_return_val_if_fail (fmt != NULL, NULL);
  va_start (ap, fmt);
  name = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  return g_hash_table_lookup (model->tensors, name);
}
