/* Model loader: the golden models load with the right configuration and
 * parameter count; broken files (built in memory from a golden model) fail
 * with the right error code and a message naming what is wrong, and never
 * crash; F16 / BF16 / F64 models convert exactly; the writer round-trips. */
#include "ehat.h"
#include "ehat-model-private.h"
#include "ehat-safetensors.h"

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <locale.h>
#include <math.h>
#include <string.h>

#define BASE_MODEL "ehat-tiny-x2"

/* ---- helpers ---- */

static const char *
golden_dir (void)
{
  return g_getenv ("EHAT_GOLDEN_DIR");
}

static gboolean
need_golden (void)
{
  const char *d = golden_dir ();
  if (!d || !g_file_test (d, G_FILE_TEST_IS_DIR)) {
    g_test_fail_printf ("golden data missing: EHAT_GOLDEN_DIR=%s (the tests need ../shared/golden beside the project)", d ? d : "(unset)");
    return FALSE;
  }
  return TRUE;
}

static GBytes *
read_file_bytes (const char *path)
{
  g_autoptr (GError) error = NULL;
  char *contents = NULL;
  gsize len = 0;

  g_file_get_contents (path, &contents, &len, &error);
  g_assert_no_error (error);
  return g_bytes_new_take (contents, len);
}

static GBytes *
golden_model_bytes (const char *model)
{
  g_autofree char *p = g_build_filename (golden_dir (), model,
      "model.safetensors", NULL);
  return read_file_bytes (p);
}

static guint64
header_len (GBytes *b)
{
  const guint8 *p = g_bytes_get_data (b, NULL);
  guint64 n = 0;
  for (int i = 7; i >= 0; i--)
    n = (n << 8) | p[i];
  return n;
}

/* A safetensors file split into a mutable header and its data. */
typedef struct
{
  JsonNode *root;
  JsonObject *hdr;
  GByteArray *data;
} StFile;

static void
st_file_clear (StFile *f)
{
  json_node_unref (f->root);
  g_byte_array_unref (f->data);
}

static StFile
split_file (GBytes *b)
{
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GError) error = NULL;
  gsize size;
  const guint8 *p = g_bytes_get_data (b, &size);
  guint64 hlen = header_len (b);
  StFile f;

  json_parser_load_from_data (parser, (const char *) p + 8, (gssize) hlen,
      &error);
  g_assert_no_error (error);
  f.root = json_node_copy (json_parser_get_root (parser));
  f.hdr = json_node_get_object (f.root);
  f.data = g_byte_array_new ();
  g_byte_array_append (f.data, p + 8 + hlen, (guint) (size - 8 - hlen));
  return f;
}

static GBytes *
join_file (const StFile *f)
{
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autofree char *text = NULL;
  gsize len;
  GByteArray *out = g_byte_array_new ();
  guint8 lenbuf[8];

  json_generator_set_root (gen, f->root);
  text = json_generator_to_data (gen, &len);
  for (int i = 0; i < 8; i++)
    lenbuf[i] = (guint8) ((guint64) len >> (8 * i));
  g_byte_array_append (out, lenbuf, 8);
  g_byte_array_append (out, (const guint8 *) text, (guint) len);
  g_byte_array_append (out, f->data->data, f->data->len);
  return g_byte_array_free_to_bytes (out);
}

static JsonObject *
entry (StFile *f, const char *name)
{
  JsonObject *o = json_object_get_object_member (f->hdr, name);
  g_assert_nonnull (o);
  return o;
}

static JsonObject *
metadata (StFile *f)
{
  return entry (f, "__metadata__");
}

static void
set_int_array (JsonObject *o, const char *member, int n, const gint64 *v)
{
  JsonArray *a = json_array_new ();
  for (int i = 0; i < n; i++)
    json_array_add_int_element (a, v[i]);
  json_object_set_array_member (o, member, a);
}

#define INTS(...) (sizeof ((gint64[]) { __VA_ARGS__ }) / sizeof (gint64)), \
    ((const gint64[]) { __VA_ARGS__ })

static void
get_offsets (StFile *f, const char *name, gint64 *b, gint64 *e)
{
  JsonArray *a = json_object_get_array_member (entry (f, name),
      "data_offsets");
  *b = json_array_get_int_element (a, 0);
  *e = json_array_get_int_element (a, 1);
}

/* Appends a tensor with raw data at the end of the data buffer. */
static void
add_tensor (StFile *f, const char *name, const char *dtype, int ndim,
    const gint64 *shape, const void *data, gsize nbytes)
{
  JsonObject *o = json_object_new ();
  gint64 offs[2] = { f->data->len, f->data->len + nbytes };

  json_object_set_string_member (o, "dtype", dtype);
  set_int_array (o, "shape", ndim, shape);
  set_int_array (o, "data_offsets", 2, offs);
  json_object_set_object_member (f->hdr, name, o);
  if (nbytes) {
    if (data)
      g_byte_array_append (f->data, data, (guint) nbytes);
    else {
      guint old = f->data->len;
      g_byte_array_set_size (f->data, old + (guint) nbytes);
      memset (f->data->data + old, 0, nbytes);
    }
  }
}

/* Asserts the load fails with `code` and a message holding every needle. */
static void
assert_load_fails (GBytes *b, int code, const char *const *needles)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (EhatModel) m = ehat_model_load_from_bytes (b, &error);

  g_assert_null (m);
  g_assert_nonnull (error);
  if (g_test_verbose ())
    g_test_message ("error: %s", error->message);
  g_assert_error (error, EHAT_ERROR, code);
  for (int i = 0; needles && needles[i]; i++) {
    if (!strstr (error->message, needles[i]))
      g_error ("message '%s' lacks '%s'", error->message, needles[i]);
  }
}

static void
assert_st_fails (GBytes *b, const char *needle)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (EhatSafetensors) st = ehat_safetensors_new_from_bytes (b,
      &error);

  g_assert_null (st);
  g_assert_error (error, EHAT_ERROR, EHAT_ERROR_FORMAT);
  if (needle && !strstr (error->message, needle))
    g_error ("message '%s' lacks '%s'", error->message, needle);
}

/* ---- golden models ---- */

static void
check_golden (const char *name)
{
  g_autofree char *dir = g_build_filename (golden_dir (), name, NULL);
  g_autofree char *mp = g_build_filename (dir, "model.safetensors", NULL);
  g_autofree char *ip = g_build_filename (dir, "info.json", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (EhatModel) m = NULL;
  g_autoptr (EhatModel) m2 = NULL;
  g_autoptr (EhatSafetensors) st = NULL;
  g_autoptr (GBytes) bytes = NULL;
  g_autofree const char **keys = NULL;
  g_autofree float *raw = NULL;
  JsonObject *info, *cfg;
  JsonArray *depths, *heads;
  const EhatConfig *c;
  const EhatStTensor *t;
  const float *w;
  int n_w0 = 1, n_w1 = 1;

  m = ehat_model_load (mp, &error);
  g_assert_no_error (error);
  g_assert_nonnull (m);

  json_parser_load_from_file (parser, ip, &error);
  g_assert_no_error (error);
  info = json_node_get_object (json_parser_get_root (parser));
  cfg = json_object_get_object_member (info, "config");
  c = ehat_model_get_config (m);

  g_assert_cmpint (c->arch, ==, g_str_has_prefix (name, "ehat")
      ? EHAT_ARCH_EHAT : EHAT_ARCH_HAT);
  g_assert_cmpint (c->upscale, ==, json_object_get_int_member (cfg,
          "upscale"));
  g_assert_cmpint (c->embed_dim, ==, json_object_get_int_member (cfg,
          "embed_dim"));
  g_assert_cmpint (c->window_size, ==, json_object_get_int_member (cfg,
          "window_size"));
  g_assert_cmpint (c->compress_ratio, ==, json_object_get_int_member (cfg,
          "compress_ratio"));
  g_assert_cmpint (c->squeeze_factor, ==, json_object_get_int_member (cfg,
          "squeeze_factor"));
  g_assert_cmpfloat (c->conv_scale, ==, (float) json_object_get_double_member
      (cfg, "conv_scale"));
  g_assert_cmpfloat (c->overlap_ratio, ==,
      (float) json_object_get_double_member (cfg, "overlap_ratio"));
  g_assert_cmpfloat (c->mlp_ratio, ==, (float) json_object_get_double_member
      (cfg, "mlp_ratio"));
  g_assert_cmpfloat (c->img_range, ==, (float) json_object_get_double_member
      (cfg, "img_range"));
  depths = json_object_get_array_member (cfg, "depths");
  heads = json_object_get_array_member (cfg, "num_heads");
  g_assert_cmpint (c->n_groups, ==, json_array_get_length (depths));
  for (int l = 0; l < c->n_groups; l++) {
    g_assert_cmpint (c->depths[l], ==, json_array_get_int_element (depths, l));
    g_assert_cmpint (c->num_heads[l], ==, json_array_get_int_element (heads,
            l));
    n_w0 += 2 + 2 * c->depths[l];
    n_w1 += 1 + 2 * c->depths[l];
  }
  g_assert_cmpfloat_with_epsilon (c->rgb_mean[0], 0.4488f, 1e-7);
  g_assert_cmpfloat_with_epsilon (c->rgb_mean[1], 0.4371f, 1e-7);
  g_assert_cmpfloat_with_epsilon (c->rgb_mean[2], 0.4040f, 1e-7);
  g_assert_false (c->ape);
  g_assert_cmpint (c->ape_size, ==, 0);
  g_assert_false (c->danet);
  g_assert_cmpint (c->overlap_window, ==, c->window_size
      + (int) (c->window_size * (double) c->overlap_ratio));
  g_assert_cmpint (c->mlp_hidden, ==, (int) (c->embed_dim
          * (double) c->mlp_ratio));
  g_assert_cmpint (ehat_config_n_w0 (c), ==, n_w0);
  g_assert_cmpint (ehat_config_n_w1 (c), ==, n_w1);
  g_assert_cmpuint (ehat_model_get_n_params (m), ==,
      json_object_get_int_member (info, "params"));

  /* metadata: copied, listed sorted */
  g_assert_cmpstr (ehat_model_get_metadata (m, "format"), ==, "ehat-sr/1");
  g_assert_null (ehat_model_get_metadata (m, "no-such-key"));
  keys = ehat_model_list_metadata (m);
  g_assert_nonnull (keys);
  g_assert_nonnull (keys[0]);
  for (int i = 1; keys[i]; i++)
    g_assert_cmpint (strcmp (keys[i - 1], keys[i]), <, 0);

  /* weights equal the file's */
  st = ehat_safetensors_open (mp, &error);
  g_assert_no_error (error);
  t = ehat_safetensors_find (st, "layers.0.residual_group.blocks.0.attn.qkv.weight");
  g_assert_nonnull (t);
  raw = g_new (float, t->numel);
  ehat_st_tensor_to_f32 (t, raw);
  w = ehat_model_get_f32_printf (m,
      "layers.%d.residual_group.blocks.%d.attn.qkv.weight", 0, 0);
  g_assert_nonnull (w);
  g_assert_cmpmem (w, t->numel * sizeof (float), raw,
      t->numel * sizeof (float));
  g_assert_true (ehat_model_get_f32 (m, "conv_last.bias") != NULL);
  g_assert_null (ehat_model_get_f32 (m, "conv_last.nothing"));
  g_assert_null (ehat_model_get_f32_printf (m, "layers.%d.conv.weight",
          c->n_groups));
  if (c->arch == EHAT_ARCH_EHAT)
    g_assert_nonnull (ehat_model_get_f32 (m,
            "__branchattentionmodule__.weight_1"));

  /* multiply-adds: positive; padding 9 → 16 costs more per real pixel */
  g_assert_cmpfloat (ehat_model_get_macs_per_pixel (m, 64, 64), >, 1e4);
  g_assert_cmpfloat (ehat_model_get_macs_per_pixel (m, 9, 9), >,
      ehat_model_get_macs_per_pixel (m, 16, 16));
  g_assert_cmpfloat (ehat_model_get_macs_per_pixel (m, 0, 16), ==, 0.0);

  /* from bytes: the same model; the bytes may go right away */
  bytes = read_file_bytes (mp);
  m2 = ehat_model_load_from_bytes (bytes, &error);
  g_assert_no_error (error);
  g_clear_pointer (&bytes, g_bytes_unref);
  g_assert_cmpuint (ehat_model_get_n_params (m2), ==,
      ehat_model_get_n_params (m));
  g_assert_cmpmem (ehat_model_get_config (m2), sizeof (EhatConfig), c,
      sizeof (EhatConfig));
  g_assert_cmpmem (ehat_model_get_f32 (m2, "conv_first.weight"),
      27 * c->embed_dim * sizeof (float),
      ehat_model_get_f32 (m, "conv_first.weight"),
      27 * c->embed_dim * sizeof (float));

  /* refcount */
  g_assert_true (ehat_model_ref (m2) == m2);
  ehat_model_unref (m2);
  g_assert_nonnull (ehat_model_get_config (m2));
}

static void
test_golden (void)
{
  g_autoptr (GDir) dir = NULL;
  g_autoptr (GError) error = NULL;
  const char *name;
  int n = 0;

  if (!need_golden ())
    return;
  dir = g_dir_open (golden_dir (), 0, &error);
  g_assert_no_error (error);
  while ((name = g_dir_read_name (dir))) {
    g_autofree char *mp = g_build_filename (golden_dir (), name,
        "model.safetensors", NULL);
    if (!g_file_test (mp, G_FILE_TEST_EXISTS))
      continue;
    g_test_message ("golden model %s", name);
    check_golden (name);
    n++;
  }
  g_assert_cmpint (n, >=, 5);
}

/* ---- broken files built from a golden model ---- */

typedef void (*Mutate) (StFile * f);

typedef struct
{
  const char *name;
  const char *base;
  Mutate mutate;
  int code;
  const char *needles[4];
} BadCase;

static void
m_missing_tensor (StFile *f)
{
  json_object_remove_member (f->hdr, "layers.1.conv.weight");
}

static void
m_missing_upsample (StFile *f)
{
  json_object_remove_member (f->hdr, "upsample.0.weight");
}

static void
m_missing_upsample2 (StFile *f)
{
  json_object_remove_member (f->hdr, "upsample.2.bias");
}

static void
m_missing_ocab_table (StFile *f)
{
  json_object_remove_member (f->hdr,
      "layers.0.residual_group.overlap_attn.relative_position_bias_table");
}

static void
m_wrong_shape (StFile *f)
{
  set_int_array (entry (f, "conv_first.weight"), "shape", INTS (24, 3, 9, 1));
}

static void
m_wrong_rank (StFile *f)
{
  set_int_array (entry (f, "layers.1.residual_group.blocks.1.mlp.fc2.bias"),
      "shape", INTS (1, 24));
}

static void
m_wrong_table (StFile *f)
{
  /* 225×3 = 675 elements, stored as 675×1 */
  set_int_array (entry (f,
          "layers.0.residual_group.blocks.0.attn.relative_position_bias_table"),
      "shape", INTS (675, 1));
}

static void
m_i64_required (StFile *f)
{
  JsonObject *o = entry (f, "conv_first.bias");
  json_object_set_string_member (o, "dtype", "I64");
  set_int_array (o, "data_offsets", INTS (0, 8 * 24));
}

static void
m_bad_dtype (StFile *f)
{
  json_object_set_string_member (entry (f, "conv_first.bias"), "dtype", "Q4");
}

static void
m_offsets_beyond (StFile *f)
{
  gint64 n = f->data->len;
  set_int_array (entry (f, "conv_last.bias"), "data_offsets",
      INTS (n - 4, n + 8));
}

static void
m_offsets_huge (StFile *f)
{
  set_int_array (entry (f, "conv_last.bias"), "data_offsets",
      INTS (G_MAXINT64 - 4, G_MAXINT64));
}

static void
m_offsets_mismatch (StFile *f)
{
  gint64 b, e;
  get_offsets (f, "conv_first.bias", &b, &e);
  set_int_array (entry (f, "conv_first.bias"), "data_offsets",
      INTS (b, e - 4));
}

static void
m_offsets_reversed (StFile *f)
{
  gint64 b, e;
  get_offsets (f, "conv_first.bias", &b, &e);
  set_int_array (entry (f, "conv_first.bias"), "data_offsets", INTS (e, b));
}

static void
m_offsets_float (StFile *f)
{
  JsonArray *a = json_array_new ();
  json_array_add_double_element (a, 2592.0);
  json_array_add_int_element (a, 2688);
  json_object_set_array_member (entry (f, "conv_first.bias"), "data_offsets",
      a);
}

static void
m_offsets_three (StFile *f)
{
  set_int_array (entry (f, "conv_first.bias"), "data_offsets",
      INTS (2592, 2688, 2700));
}

static void
m_offsets_missing (StFile *f)
{
  json_object_remove_member (entry (f, "conv_first.bias"), "data_offsets");
}

static void
m_dtype_missing (StFile *f)
{
  json_object_remove_member (entry (f, "conv_first.bias"), "dtype");
}

static void
m_dtype_number (StFile *f)
{
  json_object_set_int_member (entry (f, "conv_first.bias"), "dtype", 4);
}

static void
m_shape_missing (StFile *f)
{
  json_object_remove_member (entry (f, "conv_first.bias"), "shape");
}

static void
m_entry_not_object (StFile *f)
{
  json_object_set_int_member (f->hdr, "conv_first.bias", 3);
}

static void
m_shape_negative (StFile *f)
{
  set_int_array (entry (f, "conv_first.bias"), "shape", INTS (-24));
}

static void
m_shape_fraction (StFile *f)
{
  JsonArray *a = json_array_new ();
  json_array_add_double_element (a, 24.0);
  json_object_set_array_member (entry (f, "conv_first.bias"), "shape", a);
}

static void
m_shape_string (StFile *f)
{
  JsonArray *a = json_array_new ();
  json_array_add_string_element (a, "24");
  json_object_set_array_member (entry (f, "conv_first.bias"), "shape", a);
}

static void
m_too_many_dims (StFile *f)
{
  set_int_array (entry (f, "conv_first.bias"), "shape",
      INTS (1, 1, 1, 1, 1, 1, 1, 1, 24));
}

static void
m_numel_overflow (StFile *f)
{
  set_int_array (entry (f, "conv_first.bias"), "shape",
      INTS (1 << 30, 1 << 30, 1 << 30, 1 << 30, 24));
}

static void
m_bytes_overflow (StFile *f)
{
  /* 2^62 elements fit gint64; 2^62 × 4 bytes do not fit 64 bits */
  set_int_array (entry (f, "conv_first.bias"), "shape",
      INTS ((gint64) 1 << 62));
}

static void
m_zero_dim (StFile *f)
{
  /* a zero-size tensor is valid safetensors, but the wrong shape here */
  set_int_array (entry (f, "conv_first.bias"), "shape", INTS (0));
  set_int_array (entry (f, "conv_first.bias"), "data_offsets", INTS (0, 0));
}

static void
m_no_metadata (StFile *f)
{
  json_object_remove_member (f->hdr, "__metadata__");
}

static void
m_metadata_not_object (StFile *f)
{
  json_object_set_array_member (f->hdr, "__metadata__", json_array_new ());
}

static void
m_metadata_not_string (StFile *f)
{
  json_object_set_int_member (metadata (f), "embed_dim", 24);
}

static void
m_metadata_null (StFile *f)
{
  json_object_set_null_member (metadata (f), "license");
}

#define MD_REMOVE(key) \
static void m_md_remove_##key (StFile *f) \
{ json_object_remove_member (metadata (f), #key); }

MD_REMOVE (format)
MD_REMOVE (arch)
MD_REMOVE (upscale)
MD_REMOVE (embed_dim)
MD_REMOVE (depths)
MD_REMOVE (num_heads)
MD_REMOVE (window_size)
MD_REMOVE (compress_ratio)
MD_REMOVE (squeeze_factor)
MD_REMOVE (conv_scale)
MD_REMOVE (overlap_ratio)
MD_REMOVE (mlp_ratio)
MD_REMOVE (img_range)
MD_REMOVE (rgb_mean)
MD_REMOVE (upsampler)
MD_REMOVE (resi_connection)

#define MD_SET(tag, key, value) \
static void m_md_##tag (StFile *f) \
{ json_object_set_string_member (metadata (f), key, value); }

MD_SET (embed_dim_word, "embed_dim", "abc")
MD_SET (embed_dim_float, "embed_dim", "24.0")
MD_SET (embed_dim_zero, "embed_dim", "0")
MD_SET (embed_dim_huge, "embed_dim", "99999999999999999999")
MD_SET (upscale_5, "upscale", "5")
MD_SET (upscale_1, "upscale", "1")
MD_SET (format_2, "format", "ehat-sr/2")
MD_SET (format_10, "format", "ehat-sr/10")
MD_SET (format_other, "format", "hat")
MD_SET (arch_swinir, "arch", "swinir")
MD_SET (depths_short, "depths", "[2]")
MD_SET (depths_zero, "depths", "[2, 0]")
MD_SET (depths_negative, "depths", "[2, -2]")
MD_SET (depths_empty, "depths", "[]")
MD_SET (depths_scalar, "depths", "2")
MD_SET (depths_float, "depths", "[2.5, 2]")
MD_SET (depths_junk, "depths", "[2, 2")
MD_SET (depths_too_many, "depths",
    "[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]")
MD_SET (heads_indivisible, "num_heads", "[5, 5]")
MD_SET (heads_zero, "num_heads", "[3, 0]")
MD_SET (window_odd, "window_size", "7")
MD_SET (window_zero, "window_size", "0")
MD_SET (compress_indivisible, "compress_ratio", "5")
MD_SET (compress_zero, "compress_ratio", "0")
MD_SET (squeeze_indivisible, "squeeze_factor", "7")
MD_SET (squeeze_too_big, "squeeze_factor", "48")
MD_SET (conv_scale_word, "conv_scale", "small")
MD_SET (conv_scale_inf, "conv_scale", "inf")
MD_SET (overlap_negative, "overlap_ratio", "-0.5")
MD_SET (overlap_odd, "overlap_ratio", "0.125")
MD_SET (mlp_nan, "mlp_ratio", "nan")
MD_SET (mlp_zero, "mlp_ratio", "0")
MD_SET (img_range_zero, "img_range", "0")
MD_SET (img_range_trailing, "img_range", "1.0x")
MD_SET (rgb_mean_two, "rgb_mean", "[0.5, 0.5]")
MD_SET (rgb_mean_four, "rgb_mean", "[0.5, 0.5, 0.5, 0.5]")
MD_SET (rgb_mean_words, "rgb_mean", "[\"a\", 0.5, 0.5]")
MD_SET (upsampler_other, "upsampler", "nearest+conv")
MD_SET (resi_other, "resi_connection", "3conv")
MD_SET (danet_maybe, "danet", "maybe")
MD_SET (danet_true, "danet", "true")

static void
m_bsa_short (StFile *f)
{
  /* ehat-tiny (2 groups of 2) needs 1 + 2 + 2·5 = 13 of weight_0 */
  gint64 b, e;
  const char *n = "__branchattentionmodule__.weight_0";
  get_offsets (f, n, &b, &e);
  set_int_array (entry (f, n), "shape", INTS (12));
  set_int_array (entry (f, n), "data_offsets", INTS (b, b + 48));
}

static void
m_bsa_2d (StFile *f)
{
  set_int_array (entry (f, "__branchattentionmodule__.weight_1"), "shape",
      INTS (1, 157));
}

static void
m_bsa_missing (StFile *f)
{
  json_object_remove_member (f->hdr, "__branchattentionmodule__.weight_1");
}

/* An absolute_pos_embed of `tokens` × `dim` float32 zeros. */
static void
add_ape (StFile *f, int tokens, int dim)
{
  add_tensor (f, "absolute_pos_embed", "F32", 3,
      (const gint64[]) { 1, tokens, dim }, NULL, (gsize) tokens * dim * 4);
}

static void
m_ape_wrong (StFile *f)
{
  add_ape (f, 64, 25);
}

/* 32 tokens are no square grid; 36 are 6×6, off the 8-pixel window grid:
 * neither fits any input the network can take */
static void
m_ape_not_square (StFile *f)
{
  add_ape (f, 32, 24);
}

static void
m_ape_off_grid (StFile *f)
{
  add_ape (f, 36, 24);
}

static void
m_ape_i8 (StFile *f)
{
  add_tensor (f, "absolute_pos_embed", "I8", 3,
      (const gint64[]) { 1, 64, 24 }, NULL, 64 * 24);
}

static const BadCase bad_cases[] = {
  {"missing-tensor", NULL, m_missing_tensor, EHAT_ERROR_TENSOR,
      {"missing tensor 'layers.1.conv.weight'", "<memory>"}},
  {"missing-ocab-table", NULL, m_missing_ocab_table, EHAT_ERROR_TENSOR,
      {"overlap_attn.relative_position_bias_table"}},
  {"wrong-shape", NULL, m_wrong_shape, EHAT_ERROR_TENSOR,
      {"'conv_first.weight'", "[24, 3, 9, 1]", "[24, 3, 3, 3]"}},
  {"wrong-rank", NULL, m_wrong_rank, EHAT_ERROR_TENSOR,
      {"blocks.1.mlp.fc2.bias", "[1, 24]", "[24]"}},
  {"wrong-table", NULL, m_wrong_table, EHAT_ERROR_TENSOR,
      {"blocks.0.attn.relative_position_bias_table", "[675, 1]",
          "[225, 3]"}},
  {"i64-required", NULL, m_i64_required, EHAT_ERROR_TENSOR,
      {"'conv_first.bias'", "I64"}},
  {"bad-dtype", NULL, m_bad_dtype, EHAT_ERROR_FORMAT,
      {"'conv_first.bias'", "Q4"}},
  {"offsets-beyond", NULL, m_offsets_beyond, EHAT_ERROR_FORMAT,
      {"'conv_last.bias'"}},
  {"offsets-huge", NULL, m_offsets_huge, EHAT_ERROR_FORMAT,
      {"'conv_last.bias'"}},
  {"offsets-mismatch", NULL, m_offsets_mismatch, EHAT_ERROR_FORMAT,
      {"'conv_first.bias'", "data_offsets"}},
  {"offsets-reversed", NULL, m_offsets_reversed, EHAT_ERROR_FORMAT,
      {"'conv_first.bias'"}},
  {"offsets-float", NULL, m_offsets_float, EHAT_ERROR_FORMAT,
      {"'conv_first.bias'", "data_offsets"}},
  {"offsets-three", NULL, m_offsets_three, EHAT_ERROR_FORMAT,
      {"'conv_first.bias'", "data_offsets"}},
  {"offsets-missing", NULL, m_offsets_missing, EHAT_ERROR_FORMAT,
      {"'conv_first.bias'", "data_offsets"}},
  {"dtype-missing", NULL, m_dtype_missing, EHAT_ERROR_FORMAT,
      {"'conv_first.bias'", "dtype"}},
  {"dtype-number", NULL, m_dtype_number, EHAT_ERROR_FORMAT,
      {"'conv_first.bias'", "dtype"}},
  {"shape-missing", NULL, m_shape_missing, EHAT_ERROR_FORMAT,
      {"'conv_first.bias'", "shape"}},
  {"entry-not-object", NULL, m_entry_not_object, EHAT_ERROR_FORMAT,
      {"'conv_first.bias'"}},
  {"shape-negative", NULL, m_shape_negative, EHAT_ERROR_FORMAT,
      {"'conv_first.bias'", "shape"}},
  {"shape-fraction", NULL, m_shape_fraction, EHAT_ERROR_FORMAT,
      {"'conv_first.bias'", "shape"}},
  {"shape-string", NULL, m_shape_string, EHAT_ERROR_FORMAT,
      {"'conv_first.bias'", "shape"}},
  {"too-many-dims", NULL, m_too_many_dims, EHAT_ERROR_FORMAT,
      {"'conv_first.bias'", "dimensions"}},
  {"numel-overflow", NULL, m_numel_overflow, EHAT_ERROR_FORMAT,
      {"'conv_first.bias'", "overflow"}},
  {"bytes-overflow", NULL, m_bytes_overflow, EHAT_ERROR_FORMAT,
      {"'conv_first.bias'", "overflow"}},
  {"zero-dim", NULL, m_zero_dim, EHAT_ERROR_TENSOR,
      {"'conv_first.bias'", "[0]", "[24]"}},
  {"no-metadata", NULL, m_no_metadata, EHAT_ERROR_CONFIG, {"'format'"}},
  {"metadata-not-object", NULL, m_metadata_not_object, EHAT_ERROR_FORMAT,
      {"__metadata__"}},
  {"metadata-not-string", NULL, m_metadata_not_string, EHAT_ERROR_FORMAT,
      {"'embed_dim'", "not a string"}},
  {"metadata-null", NULL, m_metadata_null, EHAT_ERROR_FORMAT,
      {"'license'"}},
#define MISSING(key) {"md-missing-" #key, NULL, m_md_remove_##key, \
      EHAT_ERROR_CONFIG, {"'" #key "'", "missing"}}
  MISSING (format), MISSING (arch), MISSING (upscale), MISSING (embed_dim),
  MISSING (depths), MISSING (num_heads), MISSING (window_size),
  MISSING (compress_ratio), MISSING (squeeze_factor), MISSING (conv_scale),
  MISSING (overlap_ratio), MISSING (mlp_ratio), MISSING (img_range),
  MISSING (rgb_mean), MISSING (upsampler), MISSING (resi_connection),
#define BADVAL(tag, key, value) {"md-" #tag, NULL, m_md_##tag, \
      EHAT_ERROR_CONFIG, {"'" key "'", value}}
  BADVAL (embed_dim_word, "embed_dim", "abc"),
  BADVAL (embed_dim_float, "embed_dim", "24.0"),
  BADVAL (embed_dim_zero, "embed_dim", "'0'"),
  BADVAL (embed_dim_huge, "embed_dim", "99999999999999999999"),
  BADVAL (upscale_5, "upscale", "'5'"),
  BADVAL (upscale_1, "upscale", "'1'"),
  BADVAL (format_2, "format", "ehat-sr/2"),
  BADVAL (format_10, "format", "ehat-sr/10"),
  BADVAL (format_other, "format", "'hat'"),
  BADVAL (arch_swinir, "arch", "swinir"),
  BADVAL (depths_zero, "depths", "[2, 0]"),
  BADVAL (depths_negative, "depths", "[2, -2]"),
  BADVAL (depths_empty, "depths", "[]"),
  BADVAL (depths_scalar, "depths", "'2'"),
  BADVAL (depths_float, "depths", "[2.5, 2]"),
  BADVAL (depths_junk, "depths", "[2, 2"),
  BADVAL (depths_too_many, "depths", "[1,1,1"),
  BADVAL (heads_indivisible, "num_heads", "[5, 5]"),
  BADVAL (heads_zero, "num_heads", "[3, 0]"),
  BADVAL (window_odd, "window_size", "'7'"),
  BADVAL (window_zero, "window_size", "'0'"),
  BADVAL (compress_indivisible, "compress_ratio", "'5'"),
  BADVAL (compress_zero, "compress_ratio", "'0'"),
  BADVAL (squeeze_indivisible, "squeeze_factor", "'7'"),
  BADVAL (squeeze_too_big, "squeeze_factor", "'48'"),
  BADVAL (conv_scale_word, "conv_scale", "small"),
  BADVAL (conv_scale_inf, "conv_scale", "inf"),
  BADVAL (overlap_negative, "overlap_ratio", "-0.5"),
  BADVAL (overlap_odd, "overlap_ratio", "0.125"),
  BADVAL (mlp_nan, "mlp_ratio", "nan"),
  BADVAL (mlp_zero, "mlp_ratio", "'0'"),
  BADVAL (img_range_zero, "img_range", "'0'"),
  BADVAL (img_range_trailing, "img_range", "1.0x"),
  BADVAL (rgb_mean_two, "rgb_mean", "[0.5, 0.5]"),
  BADVAL (rgb_mean_four, "rgb_mean", "[0.5, 0.5, 0.5, 0.5]"),
  BADVAL (rgb_mean_words, "rgb_mean", "\"a\""),
  BADVAL (upsampler_other, "upsampler", "nearest+conv"),
  BADVAL (resi_other, "resi_connection", "3conv"),
  BADVAL (danet_maybe, "danet", "maybe"),
  {"md-depths-short", NULL, m_md_depths_short, EHAT_ERROR_CONFIG,
      {"'depths'", "'num_heads'"}},
  {"danet-missing", NULL, m_md_danet_true, EHAT_ERROR_TENSOR,
      {"missing tensor 'danet.pam.query_conv.weight'"}},
  {"bsa-short", NULL, m_bsa_short, EHAT_ERROR_TENSOR,
      {"'__branchattentionmodule__.weight_0'", "[12]", "at least [13]"}},
  {"bsa-2d", NULL, m_bsa_2d, EHAT_ERROR_TENSOR,
      {"'__branchattentionmodule__.weight_1'", "[1, 157]"}},
  {"bsa-missing", NULL, m_bsa_missing, EHAT_ERROR_TENSOR,
      {"missing tensor '__branchattentionmodule__.weight_1'"}},
  {"ape-wrong-shape", NULL, m_ape_wrong, EHAT_ERROR_TENSOR,
      {"'absolute_pos_embed'", "[1, 64, 25]"}},
  {"ape-i8", NULL, m_ape_i8, EHAT_ERROR_TENSOR,
      {"'absolute_pos_embed'", "I8"}},
  {"ape-not-square", NULL, m_ape_not_square, EHAT_ERROR_TENSOR,
      {"'absolute_pos_embed' has 32 tokens", "window size 8"}},
  {"ape-off-grid", NULL, m_ape_off_grid, EHAT_ERROR_TENSOR,
      {"'absolute_pos_embed' has 36 tokens", "img_size"}},
  {"hat-missing-upsample", "hat-small-x3", m_missing_upsample,
      EHAT_ERROR_TENSOR, {"missing tensor 'upsample.0.weight'"}},
  {"hat-x4-missing-upsample2", "hat-small-x4", m_missing_upsample2,
      EHAT_ERROR_TENSOR, {"missing tensor 'upsample.2.bias'"}},
};

static void
test_bad_case (gconstpointer data)
{
  const BadCase *bc = data;
  g_autoptr (GBytes) orig = NULL;
  g_autoptr (GBytes) bad = NULL;
  StFile f;

  if (!need_golden ())
    return;
  orig = golden_model_bytes (bc->base ? bc->base : BASE_MODEL);
  f = split_file (orig);
  bc->mutate (&f);
  bad = join_file (&f);
  st_file_clear (&f);
  assert_load_fails (bad, bc->code, bc->needles);
}

/* The file path names the file in every message. */
static void
test_bad_file_path (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) orig = NULL;
  g_autoptr (GBytes) bad = NULL;
  g_autofree char *tmp = NULL;
  g_autofree char *path = NULL;
  g_autofree char *empty = NULL;
  g_autofree char *missing = NULL;
  EhatModel *m;
  StFile f;

  if (!need_golden ())
    return;
  tmp = g_dir_make_tmp ("ehat-loader-XXXXXX", &error);
  g_assert_no_error (error);
  path = g_build_filename (tmp, "broken.safetensors", NULL);
  empty = g_build_filename (tmp, "empty.safetensors", NULL);
  missing = g_build_filename (tmp, "missing.safetensors", NULL);

  orig = golden_model_bytes (BASE_MODEL);
  f = split_file (orig);
  m_missing_tensor (&f);
  bad = join_file (&f);
  st_file_clear (&f);
  g_file_set_contents (path, g_bytes_get_data (bad, NULL),
      g_bytes_get_size (bad), &error);
  g_assert_no_error (error);
  m = ehat_model_load (path, &error);
  g_assert_null (m);
  g_assert_error (error, EHAT_ERROR, EHAT_ERROR_TENSOR);
  g_assert_nonnull (strstr (error->message, path));
  g_assert_nonnull (strstr (error->message, "layers.1.conv.weight"));
  g_clear_error (&error);

  g_file_set_contents (empty, "", 0, &error);
  g_assert_no_error (error);
  m = ehat_model_load (empty, &error);
  g_assert_null (m);
  g_assert_error (error, EHAT_ERROR, EHAT_ERROR_FORMAT);
  g_assert_nonnull (strstr (error->message, empty));
  g_clear_error (&error);

  m = ehat_model_load (missing, &error);
  g_assert_null (m);
  g_assert_error (error, EHAT_ERROR, EHAT_ERROR_IO);
  g_assert_nonnull (strstr (error->message, missing));
  g_clear_error (&error);

  /* a directory is not a model either */
  m = ehat_model_load (tmp, &error);
  g_assert_null (m);
  g_assert_nonnull (error);
  g_assert_true (error->domain == EHAT_ERROR);
  g_clear_error (&error);

  g_unlink (path);
  g_unlink (empty);
  g_rmdir (tmp);
}

static GBytes *
prefix_bytes (GBytes *b, gsize n)
{
  return g_bytes_new (g_bytes_get_data (b, NULL), n);
}

static void
test_truncated (void)
{
  g_autoptr (GBytes) orig = NULL;
  gsize size, hlen, cuts[16];
  int nc = 0;
  StFile f;
  gint64 max_end = -1;
  const char *last = NULL;
  g_autofree char *last_name = NULL;
  g_autoptr (GList) members = NULL;

  if (!need_golden ())
    return;
  orig = golden_model_bytes (BASE_MODEL);
  size = g_bytes_get_size (orig);
  hlen = header_len (orig);
  cuts[nc++] = 0;
  cuts[nc++] = 3;
  cuts[nc++] = 7;
  cuts[nc++] = 8;
  cuts[nc++] = 9;
  cuts[nc++] = 8 + hlen / 2;
  cuts[nc++] = 8 + hlen - 1;
  cuts[nc++] = 8 + hlen;
  cuts[nc++] = 8 + hlen + 1;
  cuts[nc++] = 8 + hlen + (size - 8 - hlen) / 2;
  cuts[nc++] = size - 1;
  for (int i = 0; i < nc; i++) {
    g_autoptr (GBytes) b = prefix_bytes (orig, cuts[i]);
    assert_load_fails (b, EHAT_ERROR_FORMAT, NULL);
  }

  /* one byte short: the tensor whose data ends last is named */
  f = split_file (orig);
  members = json_object_get_members (f.hdr);
  for (GList * l = members; l; l = l->next) {
    gint64 b, e;
    if (strcmp (l->data, "__metadata__") == 0)
      continue;
    get_offsets (&f, l->data, &b, &e);
    if (e > max_end) {
      max_end = e;
      last = l->data;
    }
  }
  last_name = g_strdup_printf ("'%s'", last);
  st_file_clear (&f);
  {
    g_autoptr (GBytes) b = prefix_bytes (orig, size - 1);
    const char *needles[] = { last_name, "truncated", NULL };
    assert_load_fails (b, EHAT_ERROR_FORMAT, needles);
  }
}

static GBytes *
with_header (const char *hdr, gsize hlen, guint64 claimed, gsize data_len)
{
  GByteArray *a = g_byte_array_new ();
  guint8 lenbuf[8];

  for (int i = 0; i < 8; i++)
    lenbuf[i] = (guint8) (claimed >> (8 * i));
  g_byte_array_append (a, lenbuf, 8);
  g_byte_array_append (a, (const guint8 *) hdr, (guint) hlen);
  g_byte_array_set_size (a, a->len + (guint) data_len);
  memset (a->data + 8 + hlen, 0, data_len);
  return g_byte_array_free_to_bytes (a);
}

static void
test_bad_header (void)
{
  static const char *const bad_json[] = {
    "",
    "{",
    "[1, 2]",
    "\"just a string\"",
    "42",
    "null",
    "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}",
    "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}} x",
    "{\"a\": \xff\xfe}",
    "{\"a\": {\"dtype\": \"F32\",, \"shape\": [1]}}",
  };
  const char *ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
      "\"data_offsets\":[0,4]}}";
  g_autoptr (GString) deep = g_string_new ("{\"a\":");

  for (gsize i = 0; i < G_N_ELEMENTS (bad_json); i++) {
    g_autoptr (GBytes) b = with_header (bad_json[i], strlen (bad_json[i]),
        strlen (bad_json[i]), 16);
    assert_st_fails (b, "<memory>");
  }

  /* header length beyond the file, and beyond any sane size */
  {
    g_autoptr (GBytes) b = with_header (ok, strlen (ok), strlen (ok) + 5, 4);
    assert_st_fails (b, "header length");
  }
  {
    g_autoptr (GBytes) b = with_header (ok, strlen (ok), (guint64) 1 << 40, 4);
    assert_st_fails (b, "header length");
  }
  {
    g_autoptr (GBytes) b = with_header (ok, strlen (ok), G_MAXUINT64, 4);
    assert_st_fails (b, "header length");
  }
  {
    /* within the file, but over the 100 MiB header limit */
    gsize big = 100 * 1024 * 1024 + 8;
    g_autofree char *hdr = g_malloc (big);
    g_autoptr (GBytes) b = NULL;
    memset (hdr, ' ', big);
    memcpy (hdr, ok, strlen (ok));
    b = with_header (hdr, big, big, 0);
    assert_st_fails (b, "header length");
  }
  {
    g_autoptr (GBytes) b = with_header (ok, strlen (ok), strlen (ok), 4);
    g_autoptr (GError) error = NULL;
    g_autoptr (EhatSafetensors) st = ehat_safetensors_new_from_bytes (b,
        &error);
    g_assert_no_error (error);
    g_assert_cmpuint (ehat_safetensors_get_n_tensors (st), ==, 1);
    g_assert_cmpuint (g_hash_table_size (ehat_safetensors_get_metadata (st)),
        ==, 0);
  }

  /* deep nesting must not recurse the stack away */
  for (int i = 0; i < 200000; i++)
    g_string_append_c (deep, '[');
  {
    g_autoptr (GBytes) b = with_header (deep->str, deep->len, deep->len, 0);
    assert_st_fails (b, "<memory>");
  }
}

/* Random damage to the header of a real model: whatever happens, an error
 * in the EHAT_ERROR domain or a model, never a crash (run under valgrind). */
static void
test_fuzz_header (void)
{
  g_autoptr (GBytes) orig = NULL;
  g_autoptr (GRand) rand = g_rand_new_with_seed (1234);
  gsize size, hlen;
  const guint8 *src;
  int n_iter = g_test_slow ()? 2000 : 150;
  int n_ok = 0;

  if (!need_golden ())
    return;
  orig = golden_model_bytes ("hat-tiny-x2");
  src = g_bytes_get_data (orig, &size);
  hlen = header_len (orig);
  for (int it = 0; it < n_iter; it++) {
    g_autofree guint8 *buf = g_memdup2 (src, size);
    g_autoptr (GBytes) b = NULL;
    g_autoptr (GError) error = NULL;
    g_autoptr (EhatModel) m = NULL;
    int n_flips = 1 + g_rand_int_range (rand, 0, 4);
    static const char chars[] = "{}[]\",:0123456789-.eE x\\";
    gsize len = size;

    for (int k = 0; k < n_flips; k++) {
      gsize pos = 8 + g_rand_int_range (rand, 0, (gint32) hlen);
      if (g_rand_boolean (rand))
        buf[pos] = chars[g_rand_int_range (rand, 0, sizeof chars - 1)];
      else
        buf[pos] = (guint8) g_rand_int_range (rand, 0, 256);
    }
    if (it % 10 == 0)
      buf[g_rand_int_range (rand, 0, 8)] = (guint8) g_rand_int (rand);
    if (it % 7 == 0)
      len = g_rand_int_range (rand, 0, (gint32) size);
    b = g_bytes_new (buf, len);
    m = ehat_model_load_from_bytes (b, &error);
    if (m) {
      g_assert_no_error (error);
      n_ok++;
    } else {
      g_assert_nonnull (error);
      g_assert_true (error->domain == EHAT_ERROR);
    }
  }
  g_test_message ("%d of %d damaged files still loaded", n_ok, n_iter);
}

/* ---- accepted extras and options ---- */

static void
test_extras (void)
{
  g_autoptr (GBytes) orig = NULL;
  g_autoptr (GBytes) b = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (EhatModel) ref = NULL;
  g_autoptr (EhatModel) m = NULL;
  g_autofree gint64 *idx = g_new0 (gint64, 64 * 64);
  StFile f;

  if (!need_golden ())
    return;
  orig = golden_model_bytes (BASE_MODEL);
  ref = ehat_model_load_from_bytes (orig, &error);
  g_assert_no_error (error);

  f = split_file (orig);
  for (int i = 0; i < 64 * 64; i++)
    idx[i] = i % 225;
  add_tensor (&f, "layers.0.residual_group.blocks.0.attn.relative_position_index_SA",
      "I64", 2, (const gint64[]) { 64, 64 }, idx, 64 * 64 * 8);
  add_tensor (&f, "layers.0.residual_group.relative_position_index_OCA",
      "I64", 2, (const gint64[]) { 64, 144 }, NULL, 64 * 144 * 8);
  add_tensor (&f, "layers.0.residual_group.blocks.1.attn_mask", "F32", 3,
      (const gint64[]) { 4, 64, 64 }, NULL, 4 * 64 * 64 * 4);
  add_tensor (&f, "layers.0.residual_group.blocks.0.__branchattentionmodule__"
      ".weight_0", "F32", 1, (const gint64[]) { 169 }, NULL, 169 * 4);
  add_tensor (&f, "some.u16", "U16", 1, (const gint64[]) { 3 }, NULL, 6);
  add_tensor (&f, "some.f8", "F8_E4M3", 2, (const gint64[]) { 2, 3 }, NULL, 6);
  add_tensor (&f, "some.scalar", "F32", 0, NULL, NULL, 4);
  json_object_set_string_member (metadata (&f), "name", "test model");
  json_object_set_string_member (metadata (&f), "danet", "false");
  json_object_set_string_member (metadata (&f), "x-unknown", "[1, 2, {}]");
  b = join_file (&f);
  st_file_clear (&f);

  m = ehat_model_load_from_bytes (b, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (ehat_model_get_n_params (m), ==,
      ehat_model_get_n_params (ref));
  g_assert_false (ehat_model_get_config (m)->danet);
  g_assert_cmpstr (ehat_model_get_metadata (m, "name"), ==, "test model");
  g_assert_cmpstr (ehat_model_get_metadata (m, "x-unknown"), ==,
      "[1, 2, {}]");
  g_assert_null (ehat_model_get_f32 (m, "some.scalar"));
  g_assert_null (ehat_model_get_f32 (m,
          "layers.0.residual_group.blocks.1.attn_mask"));
}

static void
test_ape_and_danet (void)
{
  g_autoptr (GBytes) orig = NULL;
  g_autoptr (GBytes) b = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (EhatModel) ref = NULL;
  g_autoptr (EhatModel) m = NULL;
  const int C = 24, N = 64;
  g_autofree float *ape = g_new (float, N * C);
  const EhatConfig *c;
  float gamma = 0.25f;
  StFile f;

  if (!need_golden ())
    return;
  orig = golden_model_bytes (BASE_MODEL);
  ref = ehat_model_load_from_bytes (orig, &error);
  g_assert_no_error (error);

  f = split_file (orig);
  for (int i = 0; i < N * C; i++)
    ape[i] = i * 0.001f;
  add_tensor (&f, "absolute_pos_embed", "F32", 3,
      (const gint64[]) { 1, N, C }, ape, N * C * 4);
  json_object_set_string_member (metadata (&f), "danet", "true");
  add_tensor (&f, "danet.pam.query_conv.weight", "F32", 4,
      (const gint64[]) { C / 8, C, 1, 1 }, NULL, C / 8 * C * 4);
  add_tensor (&f, "danet.pam.query_conv.bias", "F32", 1,
      (const gint64[]) { C / 8 }, NULL, C / 8 * 4);
  add_tensor (&f, "danet.pam.key_conv.weight", "F32", 4,
      (const gint64[]) { C / 8, C, 1, 1 }, NULL, C / 8 * C * 4);
  add_tensor (&f, "danet.pam.key_conv.bias", "F32", 1,
      (const gint64[]) { C / 8 }, NULL, C / 8 * 4);
  add_tensor (&f, "danet.pam.value_conv.weight", "F32", 4,
      (const gint64[]) { C, C, 1, 1 }, NULL, C * C * 4);
  add_tensor (&f, "danet.pam.value_conv.bias", "F32", 1,
      (const gint64[]) { C }, NULL, C * 4);
  add_tensor (&f, "danet.pam.gamma", "F32", 1, (const gint64[]) { 1 }, NULL,
      4);
  add_tensor (&f, "danet.cam.gamma", "F32", 1, (const gint64[]) { 1 },
      &gamma, 4);
  b = join_file (&f);
  st_file_clear (&f);

  m = ehat_model_load_from_bytes (b, &error);
  g_assert_no_error (error);
  c = ehat_model_get_config (m);
  g_assert_true (c->ape);
  g_assert_cmpint (c->ape_tokens, ==, N);
  g_assert_cmpint (c->ape_size, ==, 8);
  g_assert_true (c->danet);
  g_assert_cmpint (ehat_config_n_w1 (c), ==,
      ehat_config_n_w1 (ehat_model_get_config (ref)) + 1);
  g_assert_cmpint (ehat_config_n_w0 (c), ==,
      ehat_config_n_w0 (ehat_model_get_config (ref)));
  g_assert_cmpuint (ehat_model_get_n_params (m), ==,
      ehat_model_get_n_params (ref) + N * C + 2 * (C / 8 * C + C / 8)
      + C * C + C + 2);
  g_assert_cmpmem (ehat_model_get_f32 (m, "absolute_pos_embed"),
      N * C * sizeof (float), ape, N * C * sizeof (float));
  g_assert_cmpfloat (ehat_model_get_f32 (m, "danet.cam.gamma")[0], ==, gamma);
  g_assert_cmpfloat (ehat_model_get_macs_per_pixel (m, 32, 32), >,
      ehat_model_get_macs_per_pixel (ref, 32, 32));

  /* The embedding covers 8×8 tokens (one window): an input up to 8×8 is
   * padded to it and runs, a larger one is refused with a clear error. */
  {
    EhatEngineOptions opts = EHAT_ENGINE_OPTIONS_INIT;
    g_autoptr (EhatEngine) e = NULL;
    g_autofree float *in = g_new0 (float, 3 * 16 * 8);
    g_autofree float *out = g_new (float, 3 * 32 * 16);

    opts.backend = EHAT_BACKEND_CPU;
    opts.n_threads = 1;
    e = ehat_engine_new (m, &opts, &error);
    g_assert_no_error (error);
    g_assert_true (ehat_engine_process (e, in, 1, 7, 5, out, &error));
    g_assert_no_error (error);
    g_assert_false (ehat_engine_process (e, in, 1, 16, 8, out, &error));
    g_assert_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull (strstr (error->message,
            "absolute position embedding of 8×8 tokens"));
    g_assert_nonnull (strstr (error->message, "16×8 input"));
    g_assert_nonnull (strstr (error->message, "tiles of at most 8×8"));
  }
}

/* A HAT file labelled HAT and an EHAT file read as HAT: the branch weights
 * are then extras, ignored. */
static void
test_ehat_as_hat (void)
{
  g_autoptr (GBytes) orig = NULL;
  g_autoptr (GBytes) b = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (EhatModel) m = NULL;
  StFile f;

  if (!need_golden ())
    return;
  orig = golden_model_bytes (BASE_MODEL);
  f = split_file (orig);
  json_object_set_string_member (metadata (&f), "arch", "hat");
  b = join_file (&f);
  st_file_clear (&f);
  m = ehat_model_load_from_bytes (b, &error);
  g_assert_no_error (error);
  g_assert_cmpint (ehat_model_get_config (m)->arch, ==, EHAT_ARCH_HAT);
  g_assert_cmpuint (ehat_model_get_n_params (m), ==, 228979 - 169 - 157);
  g_assert_null (ehat_model_get_f32 (m, "__branchattentionmodule__.weight_0"));
}

/* ---- dtypes ---- */

/* Reference float → half, round to nearest even, written with frexp /
 * nearbyint rather than bit tricks so that it checks the loader's decoder
 * independently.  Returns the half bits; *value gets its exact value. */
static guint16
ref_to_half (float x, double *value)
{
  double a = fabs ((double) x), q;
  guint16 sign = signbit (x) ? 0x8000 : 0;
  int e;

  if (a < ldexp (1.0, -14)) {
    q = nearbyint (a * ldexp (1.0, 24));        /* 1024 = smallest normal */
    *value = copysign (q * ldexp (1.0, -24), x);
    return sign | (guint16) q;
  }
  frexp (a, &e);
  e -= 1;                       /* a = m · 2^e, m in [1, 2) */
  q = nearbyint ((a / ldexp (1.0, e) - 1.0) * 1024.0);
  if (q == 1024.0) {
    q = 0;
    e++;
  }
  if (e > 15) {
    *value = copysign (INFINITY, x);
    return sign | 0x7c00;
  }
  *value = copysign ((1.0 + q / 1024.0) * ldexp (1.0, e), x);
  return sign | (guint16) ((e + 15) << 10) | (guint16) q;
}

static guint16
ref_to_bf16 (float x, double *value)
{
  guint32 u, r;
  float f;

  memcpy (&u, &x, 4);
  r = (u + 0x7fff + ((u >> 16) & 1)) >> 16;
  u = r << 16;
  memcpy (&f, &u, 4);
  *value = f;
  return (guint16) r;
}

typedef enum
{ CONV_F16, CONV_BF16, CONV_F64 } Conv;

static void
check_converted (Conv conv)
{
  g_autoptr (GBytes) orig = NULL;
  g_autoptr (GBytes) b = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (EhatModel) ref = NULL;
  g_autoptr (EhatModel) m = NULL;
  g_autoptr (GByteArray) data = g_byte_array_new ();
  g_autoptr (GHashTable) expect = g_hash_table_new_full (g_str_hash,
      g_str_equal, g_free, g_free);
  g_autoptr (GList) members = NULL;
  const char *dtype = conv == CONV_F16 ? "F16" : conv == CONV_BF16 ? "BF16"
      : "F64";
  gsize es = conv == CONV_F64 ? 8 : 2;
  GHashTableIter it;
  gpointer k, v;
  StFile f;
  int n_checked = 0;

  if (!need_golden ())
    return;
  orig = golden_model_bytes (BASE_MODEL);
  ref = ehat_model_load_from_bytes (orig, &error);
  g_assert_no_error (error);

  f = split_file (orig);
  members = json_object_get_members (f.hdr);
  for (GList * l = members; l; l = l->next) {
    const char *name = l->data;
    JsonObject *o;
    gint64 b0, e0, n, start = data->len;
    double *vals;

    if (strcmp (name, "__metadata__") == 0)
      continue;
    o = entry (&f, name);
    g_assert_cmpstr (json_object_get_string_member (o, "dtype"), ==, "F32");
    get_offsets (&f, name, &b0, &e0);
    n = (e0 - b0) / 4;
    vals = g_new (double, n);
    for (gint64 i = 0; i < n; i++) {
      float x;
      memcpy (&x, f.data->data + b0 + 4 * i, 4);
      if (conv == CONV_F16) {
        guint16 h = GUINT16_TO_LE (ref_to_half (x, &vals[i]));
        g_byte_array_append (data, (const guint8 *) &h, 2);
        /* half keeps 11 significant bits */
        g_assert_cmpfloat (fabs (vals[i] - x), <=,
            fabs (x) * ldexp (1.0, -11) + ldexp (1.0, -25));
      } else if (conv == CONV_BF16) {
        guint16 h = GUINT16_TO_LE (ref_to_bf16 (x, &vals[i]));
        g_byte_array_append (data, (const guint8 *) &h, 2);
        g_assert_cmpfloat (fabs (vals[i] - x), <=, fabs (x) * ldexp (1.0,
                -8));
      } else {
        double d = x;
        guint64 u;
        memcpy (&u, &d, 8);
        u = GUINT64_TO_LE (u);
        g_byte_array_append (data, (const guint8 *) &u, 8);
        vals[i] = x;
      }
    }
    json_object_set_string_member (o, "dtype", dtype);
    set_int_array (o, "data_offsets", INTS (start, start + n * (gint64) es));
    g_hash_table_insert (expect, g_strdup (name), vals);
  }
  g_byte_array_set_size (f.data, 0);
  g_byte_array_append (f.data, data->data, data->len);
  b = join_file (&f);
  st_file_clear (&f);

  m = ehat_model_load_from_bytes (b, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (ehat_model_get_n_params (m), ==,
      ehat_model_get_n_params (ref));
  g_hash_table_iter_init (&it, expect);
  while (g_hash_table_iter_next (&it, &k, &v)) {
    const float *w = ehat_model_get_f32 (m, k);
    const double *vals = v;
    g_autoptr (EhatSafetensors) st = NULL;
    const EhatStTensor *t;

    g_assert_nonnull (w);
    st = ehat_safetensors_new_from_bytes (b, &error);
    g_assert_no_error (error);
    t = ehat_safetensors_find (st, k);
    for (gint64 i = 0; i < t->numel; i++) {
      if ((double) w[i] != vals[i])
        g_error ("%s %s[%" G_GINT64_FORMAT "]: loaded %.9g, expected %.9g",
            dtype, (char *) k, i, w[i], vals[i]);
    }
    n_checked++;
  }
  g_assert_cmpint (n_checked, ==, 130);
}

static void
test_f16_model (void)
{
  check_converted (CONV_F16);
}

static void
test_bf16_model (void)
{
  check_converted (CONV_BF16);
}

static void
test_f64_model (void)
{
  check_converted (CONV_F64);
}

/* Decodes `n` little-endian 16-bit values through a tensor at an odd
 * address (the loader must not assume alignment). */
static void
decode16 (EhatDType dtype, const guint16 *vals, int n, float *out)
{
  g_autofree guint8 *buf = g_malloc (2 * n + 1);
  EhatStTensor t = { 0 };

  for (int i = 0; i < n; i++) {
    buf[1 + 2 * i] = vals[i] & 0xff;
    buf[2 + 2 * i] = vals[i] >> 8;
  }
  t.name = "t";
  t.dtype = dtype;
  t.ndim = 1;
  t.shape[0] = n;
  t.numel = n;
  t.data = buf + 1;
  t.nbytes = 2 * n;
  ehat_st_tensor_to_f32 (&t, out);
}

static void
test_f16_specials (void)
{
  static const guint16 h[] = {
    0x0000, 0x8000, 0x0001, 0x8001, 0x0002, 0x0200, 0x03ff, 0x0400,
    0x3c00, 0xc000, 0x3555, 0x7bff, 0xfbff, 0x7c00, 0xfc00, 0x7e00,
    0x7c01, 0xfe00,
  };
  const double expect[] = {
    0.0, -0.0, ldexp (1, -24), -ldexp (1, -24), ldexp (1, -23),
    ldexp (1, -15), 1023 * ldexp (1, -24), ldexp (1, -14),
    1.0, -2.0, 0.333251953125, 65504.0, -65504.0, INFINITY, -INFINITY,
  };
  float out[G_N_ELEMENTS (h)];

  decode16 (EHAT_DTYPE_F16, h, G_N_ELEMENTS (h), out);
  for (gsize i = 0; i < G_N_ELEMENTS (expect); i++) {
    g_assert_cmpfloat ((double) out[i], ==, expect[i]);
    g_assert_cmpint (!!signbit (out[i]), ==, !!signbit (expect[i]));
  }
  for (gsize i = G_N_ELEMENTS (expect); i < G_N_ELEMENTS (h); i++)
    g_assert_true (isnan (out[i]));
  g_assert_true (signbit (out[G_N_ELEMENTS (h) - 1]));

  /* every finite half round-trips through the reference encoder */
  for (guint32 u = 0; u < 0x10000; u++) {
    guint16 hv = (guint16) u;
    float x;
    double val;
    if ((hv & 0x7c00) == 0x7c00)
      continue;
    decode16 (EHAT_DTYPE_F16, &hv, 1, &x);
    g_assert_cmpuint (ref_to_half (x, &val), ==, hv);
    g_assert_cmpfloat ((double) x, ==, val);
  }
}

static void
test_bf16_specials (void)
{
  static const guint16 h[] = {
    0x3f80, 0xbf80, 0x0000, 0x8000, 0x0001, 0x7f7f, 0x7f80, 0xff80, 0x7fc0,
  };
  float out[G_N_ELEMENTS (h)];

  decode16 (EHAT_DTYPE_BF16, h, G_N_ELEMENTS (h), out);
  g_assert_cmpfloat (out[0], ==, 1.0f);
  g_assert_cmpfloat (out[1], ==, -1.0f);
  g_assert_cmpfloat (out[2], ==, 0.0f);
  g_assert_true (signbit (out[3]) && out[3] == 0.0f);
  g_assert_cmpfloat ((double) out[4], ==, ldexp (1, -133));
  g_assert_cmpfloat ((double) out[5], ==, ldexp (255.0 / 128.0, 127));
  g_assert_true (isinf (out[6]) && out[6] > 0);
  g_assert_true (isinf (out[7]) && out[7] < 0);
  g_assert_true (isnan (out[8]));
}

static void
test_dtypes (void)
{
  static const struct
  {
    const char *name;
    EhatDType dtype;
    int size;
  } dt[] = {
    {"F64", EHAT_DTYPE_F64, 8}, {"F32", EHAT_DTYPE_F32, 4},
    {"F16", EHAT_DTYPE_F16, 2}, {"BF16", EHAT_DTYPE_BF16, 2},
    {"I64", EHAT_DTYPE_I64, 8}, {"I32", EHAT_DTYPE_I32, 4},
    {"I16", EHAT_DTYPE_I16, 2}, {"I8", EHAT_DTYPE_I8, 1},
    {"U8", EHAT_DTYPE_U8, 1}, {"BOOL", EHAT_DTYPE_BOOL, 1},
    {"U16", EHAT_DTYPE_OTHER, 2}, {"U32", EHAT_DTYPE_OTHER, 4},
    {"U64", EHAT_DTYPE_OTHER, 8}, {"F8_E4M3", EHAT_DTYPE_OTHER, 1},
    {"F8_E5M2", EHAT_DTYPE_OTHER, 1},
  };
  g_autoptr (GString) hdr = g_string_new ("{");
  g_autoptr (GBytes) b = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (EhatSafetensors) st = NULL;
  gsize off = 0;

  for (gsize i = 0; i < G_N_ELEMENTS (dt); i++) {
    g_string_append_printf (hdr, "%s\"t%s\":{\"dtype\":\"%s\",\"shape\":[3,2],"
        "\"data_offsets\":[%" G_GSIZE_FORMAT ",%" G_GSIZE_FORMAT "]}",
        i ? "," : "", dt[i].name, dt[i].name, off, off + 6 * dt[i].size);
    off += 6 * dt[i].size;
  }
  g_string_append (hdr, "}");
  b = with_header (hdr->str, hdr->len, hdr->len, off);
  st = ehat_safetensors_new_from_bytes (b, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (ehat_safetensors_get_n_tensors (st), ==,
      G_N_ELEMENTS (dt));
  for (gsize i = 0; i < G_N_ELEMENTS (dt); i++) {
    const EhatStTensor *t = ehat_safetensors_get (st, i);
    g_autofree char *name = g_strdup_printf ("t%s", dt[i].name);
    g_assert_cmpstr (t->name, ==, name);        /* file order kept */
    g_assert_true (ehat_safetensors_find (st, name) == t);
    g_assert_cmpint (t->dtype, ==, dt[i].dtype);
    g_assert_cmpstr (t->dtype_name, ==, dt[i].name);
    g_assert_cmpint (t->ndim, ==, 2);
    g_assert_cmpint (t->numel, ==, 6);
    g_assert_cmpuint (t->nbytes, ==, 6 * dt[i].size);
    g_assert_cmpint (ehat_dtype_is_float (t->dtype), ==, i < 4);
  }
  g_assert_null (ehat_safetensors_get (st, G_N_ELEMENTS (dt)));
  g_assert_null (ehat_safetensors_find (st, "nothing"));
}

static void
test_duplicate_names (void)
{
  /* json-glib keeps the last; either way one tensor, inside bounds */
  const char *hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
      "\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
      "\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],"
      "\"data_offsets\":[0,4]}}";
  g_autoptr (GBytes) b = with_header (hdr, strlen (hdr), strlen (hdr), 8);
  g_autoptr (GError) error = NULL;
  g_autoptr (EhatSafetensors) st = ehat_safetensors_new_from_bytes (b,
      &error);

  g_assert_no_error (error);
  g_assert_cmpuint (ehat_safetensors_get_n_tensors (st), ==, 2);
  g_assert_nonnull (ehat_safetensors_find (st, "a"));
  g_assert_nonnull (ehat_safetensors_find (st, "b"));
}

/* ---- writer ---- */

static void
test_writer (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *tmp = g_dir_make_tmp ("ehat-writer-XXXXXX", &error);
  g_autofree char *p1 = g_build_filename (tmp, "a.safetensors", NULL);
  g_autofree char *p2 = g_build_filename (tmp, "b.safetensors", NULL);
  g_autofree char *p3 = g_build_filename (tmp, "nodir", "c.safetensors",
      NULL);
  g_autoptr (GHashTable) md = g_hash_table_new (g_str_hash, g_str_equal);
  g_autoptr (GHashTable) empty = g_hash_table_new (g_str_hash, g_str_equal);
  const float a[6] = { 1, 2, 3, 4, 5, -0.0f };
  const float s[1] = { 42.5f };
  const gint64 sa[2] = { 2, 3 }, sz[2] = { 0, 3 };
  const char *names[] = { "zeta", "alpha \"quoted\"", "empty", "scalar" };
  const int ndims[] = { 2, 1, 2, 0 };
  const gint64 sb[1] = { 1 };
  const gint64 *const shapes[] = { sa, sb, sz, NULL };
  const float *const data[] = { a, s, NULL, s };
  GHashTable *rmd;

  g_assert_no_error (error);
  g_hash_table_insert (md, "name", "x \"y\" \\ z\n\t\x01 é");
  g_hash_table_insert (md, "format", "ehat-sr/1");

  g_assert_true (ehat_safetensors_write_f32 (p1, md, 4, names, ndims, shapes,
          data, &error));
  g_assert_no_error (error);
  {
    g_autoptr (EhatSafetensors) st = ehat_safetensors_open (p1, &error);
    g_autoptr (GBytes) raw = read_file_bytes (p1);
    const guint8 *rp = g_bytes_get_data (raw, NULL);
    guint64 hl = header_len (raw);
    float out[6];

    g_assert_no_error (error);
    g_assert_cmpuint (hl % 8, ==, 0);
    g_assert_true (rp[8] == '{');
    g_assert_true (rp[8 + hl - 1] == '}' || rp[8 + hl - 1] == ' ');
    g_assert_cmpuint (ehat_safetensors_get_n_tensors (st), ==, 4);
    for (int i = 0; i < 4; i++)
      g_assert_cmpstr (ehat_safetensors_get (st, i)->name, ==, names[i]);
    ehat_st_tensor_to_f32 (ehat_safetensors_get (st, 0), out);
    g_assert_cmpmem (out, sizeof a, a, sizeof a);
    g_assert_cmpint (ehat_safetensors_get (st, 0)->dtype, ==, EHAT_DTYPE_F32);
    g_assert_cmpint (ehat_safetensors_get (st, 0)->shape[1], ==, 3);
    g_assert_cmpint (ehat_safetensors_get (st, 2)->numel, ==, 0);
    g_assert_cmpint (ehat_safetensors_get (st, 3)->ndim, ==, 0);
    g_assert_cmpint (ehat_safetensors_get (st, 3)->numel, ==, 1);
    ehat_st_tensor_to_f32 (ehat_safetensors_get (st, 3), out);
    g_assert_cmpfloat (out[0], ==, 42.5f);
    /* data start 8-byte aligned */
    g_assert_cmpuint ((ehat_safetensors_get (st, 0)->data - rp) % 8, ==, 0);
    rmd = ehat_safetensors_get_metadata (st);
    g_assert_cmpuint (g_hash_table_size (rmd), ==, 2);
    g_assert_cmpstr (g_hash_table_lookup (rmd, "name"), ==,
        "x \"y\" \\ z\n\t\x01 é");
    (void) rp;
  }

  /* no metadata (NULL or empty): no __metadata__ entry */
  for (int pass = 0; pass < 2; pass++) {
    g_autoptr (GBytes) raw = NULL;
    g_autofree char *text = NULL;
    g_assert_true (ehat_safetensors_write_f32 (p2, pass ? empty : NULL, 1,
            names, ndims, shapes, data, &error));
    g_assert_no_error (error);
    raw = read_file_bytes (p2);
    text = g_strndup ((const char *) g_bytes_get_data (raw, NULL) + 8,
        header_len (raw));
    g_assert_null (strstr (text, "__metadata__"));
  }

  g_assert_false (ehat_safetensors_write_f32 (p3, NULL, 1, names, ndims,
          shapes, data, &error));
  g_assert_error (error, EHAT_ERROR, EHAT_ERROR_IO);
  g_clear_error (&error);

  g_unlink (p1);
  g_unlink (p2);
  g_rmdir (tmp);
}

/* ---- configuration alone ---- */

static GHashTable *
base_metadata (void)
{
  GHashTable *md = g_hash_table_new (g_str_hash, g_str_equal);
  g_hash_table_insert (md, "format", "ehat-sr/1");
  g_hash_table_insert (md, "arch", "ehat");
  g_hash_table_insert (md, "upscale", "4");
  g_hash_table_insert (md, "embed_dim", "180");
  g_hash_table_insert (md, "depths", "[6,6,6,6,6,6,6,6,6,6,6,6]");
  g_hash_table_insert (md, "num_heads", "[6,6,6,6,6,6,6,6,6,6,6,6]");
  g_hash_table_insert (md, "window_size", "16");
  g_hash_table_insert (md, "compress_ratio", "3");
  g_hash_table_insert (md, "squeeze_factor", "30");
  g_hash_table_insert (md, "conv_scale", "0.01");
  g_hash_table_insert (md, "overlap_ratio", "0.5");
  g_hash_table_insert (md, "mlp_ratio", "2.0");
  g_hash_table_insert (md, "img_range", "1.");
  g_hash_table_insert (md, "rgb_mean", "[0.4488,0.4371,0.4040]");
  g_hash_table_insert (md, "upsampler", "pixelshuffle");
  g_hash_table_insert (md, "resi_connection", "1conv");
  return md;
}

static void
test_config_hat_l (void)
{
  g_autoptr (GHashTable) md = base_metadata ();
  g_autoptr (GError) error = NULL;
  EhatConfig c;

  g_assert_true (ehat_config_from_metadata (md, &c, &error));
  g_assert_no_error (error);
  /* EHAT-SPEC §5: HAT-L-sized EHAT uses exactly 169 and 157 */
  g_assert_cmpint (ehat_config_n_w0 (&c), ==, 169);
  g_assert_cmpint (ehat_config_n_w1 (&c), ==, 157);
  g_assert_cmpint (c.overlap_window, ==, 24);
  g_assert_cmpint (c.mlp_hidden, ==, 360);
  g_assert_cmpint (c.n_groups, ==, 12);
  g_assert_cmpfloat (c.img_range, ==, 1.0f);
  g_assert_false (c.danet);
  c.ape = TRUE;
  g_assert_cmpint (ehat_config_n_w1 (&c), ==, 158);

  /* whitespace around numbers and a minor format version are fine */
  g_hash_table_insert (md, "embed_dim", " 180 ");
  g_hash_table_insert (md, "format", "ehat-sr/1.1");
  g_hash_table_insert (md, "danet", "true");
  g_assert_true (ehat_config_from_metadata (md, &c, &error));
  g_assert_no_error (error);
  g_assert_true (c.danet);
}

/* Numbers do not depend on the C locale (a comma-decimal locale must not
 * turn "0.5" into 0). */
static void
test_config_locale (void)
{
  g_autoptr (GHashTable) md = base_metadata ();
  g_autoptr (GError) error = NULL;
  EhatConfig c;
  const char *locales[] = { "de_DE.UTF-8", "fr_FR.UTF-8", "de_DE", NULL };
  g_autofree char *old = g_strdup (setlocale (LC_NUMERIC, NULL));
  gboolean set = FALSE;

  for (int i = 0; locales[i] && !set; i++)
    set = setlocale (LC_NUMERIC, locales[i]) != NULL;
  if (!set)
    g_test_message ("no comma-decimal locale installed; checking in C");
  g_assert_true (ehat_config_from_metadata (md, &c, &error));
  g_assert_no_error (error);
  g_assert_cmpfloat (c.overlap_ratio, ==, 0.5f);
  g_assert_cmpfloat (c.conv_scale, ==, 0.01f);
  g_assert_cmpfloat (c.rgb_mean[0], ==, 0.4488f);
  setlocale (LC_NUMERIC, old);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/loader/golden", test_golden);
  for (gsize i = 0; i < G_N_ELEMENTS (bad_cases); i++) {
    g_autofree char *path = g_strdup_printf ("/loader/bad/%s",
        bad_cases[i].name);
    g_test_add_data_func (path, &bad_cases[i], test_bad_case);
  }
  g_test_add_func ("/loader/bad-file-path", test_bad_file_path);
  g_test_add_func ("/loader/truncated", test_truncated);
  g_test_add_func ("/loader/bad-header", test_bad_header);
  g_test_add_func ("/loader/fuzz-header", test_fuzz_header);
  g_test_add_func ("/loader/extras", test_extras);
  g_test_add_func ("/loader/ape-danet", test_ape_and_danet);
  g_test_add_func ("/loader/ehat-as-hat", test_ehat_as_hat);
  g_test_add_func ("/loader/f16-model", test_f16_model);
  g_test_add_func ("/loader/bf16-model", test_bf16_model);
  g_test_add_func ("/loader/f64-model", test_f64_model);
  g_test_add_func ("/safetensors/f16-specials", test_f16_specials);
  g_test_add_func ("/safetensors/bf16-specials", test_bf16_specials);
  g_test_add_func ("/safetensors/dtypes", test_dtypes);
  g_test_add_func ("/safetensors/duplicate-names", test_duplicate_names);
  g_test_add_func ("/safetensors/writer", test_writer);
  g_test_add_func ("/config/hat-l", test_config_hat_l);
  g_test_add_func ("/config/locale", test_config_locale);

  return g_test_run ();
}
