/* Bounds-checked safetensors reader and a small writer.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON (an object
 * name → {dtype, shape, data_offsets}, plus an optional "__metadata__"
 * object of strings), then the data buffer that data_offsets index into.
 * Nothing of the file is trusted: the header length, the JSON structure,
 * every dtype, shape and offset are checked before a tensor is exposed, so
 * that a tensor's data pointer and nbytes always lie inside the mapping. */
#include "ehat-safetensors.h"

#include "ehat.h"

#include <errno.h>
#include <json-glib/json-glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A real model header is a few hundred KiB at most; the cap keeps a hostile
 * length from making us parse (or allocate for) gigabytes of JSON. */
#define MAX_HEADER_BYTES (100u * 1024u * 1024u)
/* Safetensors headers nest three levels deep.  json-glib's parser recurses
 * per level, so a header of nothing but '[' could exhaust the stack; a
 * cheap pre-scan rejects deep nesting first. */
#define MAX_JSON_DEPTH 32

struct _EhatSafetensors
{
  char *name;                   /* file path or "<memory>", for messages */
  GMappedFile *mapped;          /* one of mapped / bytes holds the data */
  GBytes *bytes;
  GArray *tensors;              /* EhatStTensor, file (header) order */
  GHashTable *index;            /* name → position + 1 (borrowed names) */
  GHashTable *metadata;         /* string → string, owned */
};

typedef struct
{
  const char *name;
  EhatDType dtype;
  gsize size;
} DTypeInfo;

/* Every dtype of the safetensors format with a whole-byte element size.
 * Those the enum does not name are EHAT_DTYPE_OTHER: readable, unusable. */
static const DTypeInfo dtypes[] = {
  {"F64", EHAT_DTYPE_F64, 8},
  {"F32", EHAT_DTYPE_F32, 4},
  {"F16", EHAT_DTYPE_F16, 2},
  {"BF16", EHAT_DTYPE_BF16, 2},
  {"I64", EHAT_DTYPE_I64, 8},
  {"I32", EHAT_DTYPE_I32, 4},
  {"I16", EHAT_DTYPE_I16, 2},
  {"I8", EHAT_DTYPE_I8, 1},
  {"U8", EHAT_DTYPE_U8, 1},
  {"BOOL", EHAT_DTYPE_BOOL, 1},
  {"U16", EHAT_DTYPE_OTHER, 2},
  {"U32", EHAT_DTYPE_OTHER, 4},
  {"U64", EHAT_DTYPE_OTHER, 8},
  {"F8_E4M3", EHAT_DTYPE_OTHER, 1},
  {"F8_E5M2", EHAT_DTYPE_OTHER, 1},
};

static const DTypeInfo *
lookup_dtype (const char *s)
{
  for (gsize i = 0; i < G_N_ELEMENTS (dtypes); i++)
    if (strcmp (dtypes[i].name, s) == 0)
      return &dtypes[i];
  return NULL;
}

static void
tensor_clear (gpointer p)
{
  EhatStTensor *t = p;
  g_free ((char *) t->name);
}

void
ehat_safetensors_free (EhatSafetensors *st)
{
  if (!st)
    return;
  if (st->index)
    g_hash_table_unref (st->index);
  if (st->tensors)
    g_array_unref (st->tensors);
  if (st->metadata)
    g_hash_table_unref (st->metadata);
  if (st->mapped)
    g_mapped_file_unref (st->mapped);
  if (st->bytes)
    g_bytes_unref (st->bytes);
  g_free (st->name);
  g_free (st);
}

/* Rejects JSON nested deeper than MAX_JSON_DEPTH (see above).  Brackets
 * inside strings do not count. */
static gboolean
check_json_depth (const char *s, gsize len)
{
  int depth = 0;
  gboolean in_string = FALSE;

  for (gsize i = 0; i < len; i++) {
    char c = s[i];
    if (in_string) {
      if (c == '\\')
        i++;
      else if (c == '"')
        in_string = FALSE;
    } else if (c == '"') {
      in_string = TRUE;
    } else if (c == '[' || c == '{') {
      if (++depth > MAX_JSON_DEPTH)
        return FALSE;
    } else if (c == ']' || c == '}') {
      depth--;
    }
  }
  return TRUE;
}

/* A JSON integer ≥ 0 (json-glib reads integers as gint64; anything written
 * with a fraction or exponent, or too large for gint64, is a double). */
static gboolean
node_get_uint (JsonNode *node, gint64 *out)
{
  gint64 v;

  if (!node || !JSON_NODE_HOLDS_VALUE (node)
      || json_node_get_value_type (node) != G_TYPE_INT64)
    return FALSE;
  v = json_node_get_int (node);
  if (v < 0)
    return FALSE;
  *out = v;
  return TRUE;
}

static gboolean
parse_metadata (EhatSafetensors *st, JsonNode *node, GError **error)
{
  JsonObject *obj;
  g_autoptr (GList) members = NULL;

  if (!JSON_NODE_HOLDS_OBJECT (node)) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_FORMAT,
        "%s: '__metadata__' is not a JSON object", st->name);
    return FALSE;
  }
  obj = json_node_get_object (node);
  members = json_object_get_members (obj);
  for (GList * l = members; l; l = l->next) {
    const char *key = l->data;
    JsonNode *v = json_object_get_member (obj, key);

    if (!JSON_NODE_HOLDS_VALUE (v)
        || json_node_get_value_type (v) != G_TYPE_STRING) {
      g_set_error (error, EHAT_ERROR, EHAT_ERROR_FORMAT,
          "%s: metadata value of '%s' is not a string", st->name, key);
      return FALSE;
    }
    g_hash_table_replace (st->metadata, g_strdup (key),
        g_strdup (json_node_get_string (v)));
  }
  return TRUE;
}

static gboolean
parse_tensor (EhatSafetensors *st, const char *name, JsonNode *node,
    const guint8 *data, gsize data_size, EhatStTensor *t, GError **error)
{
  JsonObject *obj;
  JsonNode *n;
  JsonArray *shape, *offs;
  const DTypeInfo *dt;
  const char *dtype_name;
  gint64 begin, end;
  guint64 numel = 1, nbytes;
  guint len;

  if (!JSON_NODE_HOLDS_OBJECT (node)) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_FORMAT,
        "%s: tensor '%s': header entry is not a JSON object", st->name, name);
    return FALSE;
  }
  obj = json_node_get_object (node);

  n = json_object_get_member (obj, "dtype");
  if (!n || !JSON_NODE_HOLDS_VALUE (n)
      || json_node_get_value_type (n) != G_TYPE_STRING) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_FORMAT,
        "%s: tensor '%s': missing or non-string 'dtype'", st->name, name);
    return FALSE;
  }
  dtype_name = json_node_get_string (n);
  dt = lookup_dtype (dtype_name);
  if (!dt) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_FORMAT,
        "%s: tensor '%s': unknown dtype '%s'", st->name, name, dtype_name);
    return FALSE;
  }

  n = json_object_get_member (obj, "shape");
  if (!n || !JSON_NODE_HOLDS_ARRAY (n)) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_FORMAT,
        "%s: tensor '%s': missing or non-array 'shape'", st->name, name);
    return FALSE;
  }
  shape = json_node_get_array (n);
  len = json_array_get_length (shape);
  if (len > EHAT_ST_MAX_DIMS) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_FORMAT,
        "%s: tensor '%s': %u dimensions (at most %d supported)", st->name,
        name, len, EHAT_ST_MAX_DIMS);
    return FALSE;
  }
  t->ndim = (int) len;
  for (guint i = 0; i < len; i++) {
    gint64 d;
    if (!node_get_uint (json_array_get_element (shape, i), &d)) {
      g_set_error (error, EHAT_ERROR, EHAT_ERROR_FORMAT,
          "%s: tensor '%s': shape[%u] is not a non-negative integer",
          st->name, name, i);
      return FALSE;
    }
    t->shape[i] = d;
    /* numel stays ≤ G_MAXINT64 so that it fits the gint64 field */
    if (d != 0 && numel > (guint64) G_MAXINT64 / (guint64) d) {
      g_set_error (error, EHAT_ERROR, EHAT_ERROR_FORMAT,
          "%s: tensor '%s': element count overflows", st->name, name);
      return FALSE;
    }
    numel *= (guint64) d;
  }
  if (numel > G_MAXUINT64 / dt->size) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_FORMAT,
        "%s: tensor '%s': byte size overflows", st->name, name);
    return FALSE;
  }
  nbytes = numel * dt->size;

  n = json_object_get_member (obj, "data_offsets");
  if (!n || !JSON_NODE_HOLDS_ARRAY (n)
      || json_array_get_length (offs = json_node_get_array (n)) != 2
      || !node_get_uint (json_array_get_element (offs, 0), &begin)
      || !node_get_uint (json_array_get_element (offs, 1), &end)) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_FORMAT,
        "%s: tensor '%s': 'data_offsets' missing or not two non-negative "
        "integers", st->name, name);
    return FALSE;
  }
  if (begin > end) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_FORMAT,
        "%s: tensor '%s': data_offsets [%" G_GINT64_FORMAT ", %"
        G_GINT64_FORMAT "] begin after end", st->name, name, begin, end);
    return FALSE;
  }
  if ((guint64) end > data_size) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_FORMAT,
        "%s: tensor '%s': data_offsets end %" G_GINT64_FORMAT
        " beyond the data (%" G_GSIZE_FORMAT " bytes; file truncated?)",
        st->name, name, end, data_size);
    return FALSE;
  }
  if ((guint64) (end - begin) != nbytes) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_FORMAT,
        "%s: tensor '%s': data_offsets span %" G_GINT64_FORMAT
        " bytes, but %" G_GUINT64_FORMAT " elements of %s need %"
        G_GUINT64_FORMAT, st->name, name, end - begin, numel, dt->name,
        nbytes);
    return FALSE;
  }

  t->dtype = dt->dtype;
  t->dtype_name = dt->name;     /* static, outlives st */
  t->numel = (gint64) numel;
  t->data = data + begin;
  t->nbytes = (gsize) nbytes;
  return TRUE;
}

static gboolean
parse (EhatSafetensors *st, const guint8 *buf, gsize size, GError **error)
{
  g_autoptr (JsonParser) parser = NULL;
  g_autoptr (GError) jerr = NULL;
  g_autoptr (GList) members = NULL;
  JsonNode *root;
  JsonObject *obj;
  guint64 hlen = 0;
  const guint8 *data;
  gsize data_size;

  if (size < 8) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_FORMAT,
        "%s: file too short for a safetensors header (%" G_GSIZE_FORMAT
        " bytes)", st->name, size);
    return FALSE;
  }
  for (int i = 7; i >= 0; i--)
    hlen = (hlen << 8) | buf[i];
  if (hlen > size - 8 || hlen > MAX_HEADER_BYTES) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_FORMAT,
        "%s: header length %" G_GUINT64_FORMAT " does not fit the file (%"
        G_GSIZE_FORMAT " bytes) or exceeds the %u-byte limit", st->name, hlen,
        size,
        MAX_HEADER_BYTES);
    return FALSE;
  }
  data = buf + 8 + hlen;
  data_size = size - 8 - (gsize) hlen;

  if (!check_json_depth ((const char *) buf + 8, (gsize) hlen)) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_FORMAT,
        "%s: header JSON nested too deeply", st->name);
    return FALSE;
  }
  parser = json_parser_new_immutable ();
  if (hlen == 0 || !json_parser_load_from_data (parser,
          (const char *) buf + 8, (gssize) hlen, &jerr)) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_FORMAT,
        "%s: header is not valid JSON: %s", st->name,
        jerr ? jerr->message : "empty");
    return FALSE;
  }
  root = json_parser_get_root (parser);
  if (!root || !JSON_NODE_HOLDS_OBJECT (root)) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_FORMAT,
        "%s: header is not a JSON object", st->name);
    return FALSE;
  }
  obj = json_node_get_object (root);

  /* json-glib keeps the last of duplicate names and lists members in
   * file order; the index check below keeps each name once anyway. */
  members = json_object_get_members (obj);
  for (GList * l = members; l; l = l->next) {
    const char *name = l->data;
    JsonNode *node = json_object_get_member (obj, name);
    EhatStTensor t = { 0 };

    if (strcmp (name, "__metadata__") == 0) {
      if (!parse_metadata (st, node, error))
        return FALSE;
      continue;
    }
    if (g_hash_table_contains (st->index, name))
      continue;
    if (!parse_tensor (st, name, node, data, data_size, &t, error))
      return FALSE;
    t.name = g_strdup (name);
    g_array_append_val (st->tensors, t);
    g_hash_table_insert (st->index, (gpointer) t.name,
        GUINT_TO_POINTER (st->tensors->len));
  }
  return TRUE;
}

static EhatSafetensors *
st_new (const char *name)
{
  EhatSafetensors *st = g_new0 (EhatSafetensors, 1);

  st->name = g_strdup (name);
  st->tensors = g_array_new (FALSE, TRUE, sizeof (EhatStTensor));
  g_array_set_clear_func (st->tensors, tensor_clear);
  st->index = g_hash_table_new (g_str_hash, g_str_equal);
  st->metadata = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
      g_free);
  return st;
}

EhatSafetensors *
ehat_safetensors_open (const char *path, GError **error)
{
  g_autoptr (GError) ferr = NULL;
  EhatSafetensors *st;
  GMappedFile *mf;

  g_return_val_if_fail (path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  /* An empty file cannot be mapped on every system; GLib handles it and
   * returns an empty mapping, which parse() rejects as too short. */
  mf = g_mapped_file_new (path, FALSE, &ferr);
  if (!mf) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_IO, "%s: cannot open: %s",
        path, ferr->message);
    return NULL;
  }
  st = st_new (path);
  st->mapped = mf;
  if (!parse (st, (const guint8 *) g_mapped_file_get_contents (mf),
          g_mapped_file_get_length (mf), error)) {
    ehat_safetensors_free (st);
    return NULL;
  }
  return st;
}

EhatSafetensors *
ehat_safetensors_new_from_bytes (GBytes *bytes, GError **error)
{
  EhatSafetensors *st;
  gsize size = 0;
  const guint8 *buf;

  g_return_val_if_fail (bytes != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  st = st_new ("<memory>");
  st->bytes = g_bytes_ref (bytes);
  buf = g_bytes_get_data (bytes, &size);
  if (!parse (st, buf, size, error)) {
    ehat_safetensors_free (st);
    return NULL;
  }
  return st;
}

guint
ehat_safetensors_get_n_tensors (const EhatSafetensors *st)
{
  g_return_val_if_fail (st != NULL, 0);
  return st->tensors->len;
}

const EhatStTensor *
ehat_safetensors_get (const EhatSafetensors *st, guint i)
{
  g_return_val_if_fail (st != NULL, NULL);
  if (i >= st->tensors->len)
    return NULL;
  return &g_array_index (st->tensors, EhatStTensor, i);
}

const EhatStTensor *
ehat_safetensors_find (const EhatSafetensors *st, const char *name)
{
  guint pos;

  g_return_val_if_fail (st != NULL, NULL);
  g_return_val_if_fail (name != NULL, NULL);
  pos = GPOINTER_TO_UINT (g_hash_table_lookup (st->index, name));
  return pos ? &g_array_index (st->tensors, EhatStTensor, pos - 1) : NULL;
}

GHashTable *
ehat_safetensors_get_metadata (const EhatSafetensors *st)
{
  g_return_val_if_fail (st != NULL, NULL);
  return st->metadata;
}

gboolean
ehat_dtype_is_float (EhatDType dtype)
{
  return dtype == EHAT_DTYPE_F32 || dtype == EHAT_DTYPE_F16
      || dtype == EHAT_DTYPE_BF16 || dtype == EHAT_DTYPE_F64;
}

static inline float
bits_to_float (guint32 u)
{
  float f;
  memcpy (&f, &u, sizeof f);
  return f;
}

/* IEEE binary16 → binary32, exact for every input (all halves are
 * representable as floats): subnormal halves become normal floats, Inf stays
 * Inf and NaN keeps sign and payload. */
static inline float
half_to_float (guint16 h)
{
  guint32 sign = (guint32) (h & 0x8000) << 16;
  guint32 exp = (h >> 10) & 0x1f;
  guint32 mant = h & 0x3ff;

  if (exp == 0x1f)
    return bits_to_float (sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    if (mant == 0)
      return bits_to_float (sign);
    /* mant · 2^-24: shift the leading one into the implicit bit */
    exp = 113;                  /* 127 - 14 */
    while (!(mant & 0x400)) {
      mant <<= 1;
      exp--;
    }
    mant &= 0x3ff;
    return bits_to_float (sign | (exp << 23) | (mant << 13));
  }
  return bits_to_float (sign | ((exp + 112) << 23) | (mant << 13));
}

/* Element loads go through memcpy: tensor data sits at any byte offset of
 * the mapping, and safetensors data are little-endian. */
void
ehat_st_tensor_to_f32 (const EhatStTensor *t, float *dst)
{
  const guint8 *p;
  gsize n;

  g_return_if_fail (t != NULL);
  g_return_if_fail (dst != NULL || t->numel == 0);
  g_return_if_fail (ehat_dtype_is_float (t->dtype));

  p = t->data;
  n = (gsize) t->numel;
  switch (t->dtype) {
    case EHAT_DTYPE_F32:
      memcpy (dst, p, n * 4);
#if G_BYTE_ORDER == G_BIG_ENDIAN
      for (gsize i = 0; i < n; i++) {
        guint32 u;
        memcpy (&u, &dst[i], 4);
        u = GUINT32_FROM_LE (u);
        memcpy (&dst[i], &u, 4);
      }
#endif
      break;
    case EHAT_DTYPE_F16:
      for (gsize i = 0; i < n; i++) {
        guint16 h;
        memcpy (&h, p + 2 * i, 2);
        dst[i] = half_to_float (GUINT16_FROM_LE (h));
      }
      break;
    case EHAT_DTYPE_BF16:
      for (gsize i = 0; i < n; i++) {
        guint16 h;
        memcpy (&h, p + 2 * i, 2);
        dst[i] = bits_to_float ((guint32) GUINT16_FROM_LE (h) << 16);
      }
      break;
    case EHAT_DTYPE_F64:
      for (gsize i = 0; i < n; i++) {
        guint64 u;
        double d;
        memcpy (&u, p + 8 * i, 8);
        u = GUINT64_FROM_LE (u);
        memcpy (&d, &u, 8);
        dst[i] = (float) d;
      }
      break;
    default:
      g_assert_not_reached ();
  }
}

/* ---- writer ---- */

static void
append_json_string (GString *s, const char *str)
{
  g_string_append_c (s, '"');
  for (const unsigned char *p = (const unsigned char *) str; *p; p++) {
    if (*p == '"' || *p == '\\')
      g_string_append_printf (s, "\\%c", *p);
    else if (*p < 0x20)
      g_string_append_printf (s, "\\u%04x", *p);
    else
      g_string_append_c (s, (char) *p);
  }
  g_string_append_c (s, '"');
}

static int
cmp_str_ptr (const void *a, const void *b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

static gboolean
write_all (FILE *f, const void *p, gsize n)
{
  return n == 0 || fwrite (p, 1, n, f) == n;
}

gboolean
ehat_safetensors_write_f32 (const char *path, GHashTable *metadata,
    guint n, const char *const *names, const int *ndims,
    const gint64 *const *shapes, const float *const *data, GError **error)
{
  g_autoptr (GString) hdr = g_string_new ("{");
  g_autofree guint64 *counts = g_new0 (guint64, n + 1);
  guint64 offset = 0;
  gboolean first = TRUE;
  guint8 lenbuf[8];
  FILE *f;
  int saved_errno = 0;
  gboolean ok;

  g_return_val_if_fail (path != NULL, FALSE);
  g_return_val_if_fail (n == 0 || (names && ndims && shapes && data), FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  if (metadata && g_hash_table_size (metadata) > 0) {
    /* sorted, so that the same model always gives the same bytes */
    g_autofree gpointer *keys = g_hash_table_get_keys_as_array (metadata,
        NULL);
    guint nk = g_hash_table_size (metadata);

    qsort (keys, nk, sizeof (gpointer), cmp_str_ptr);
    g_string_append (hdr, "\"__metadata__\":{");
    for (guint i = 0; i < nk; i++) {
      if (i)
        g_string_append_c (hdr, ',');
      append_json_string (hdr, keys[i]);
      g_string_append_c (hdr, ':');
      append_json_string (hdr, g_hash_table_lookup (metadata, keys[i]));
    }
    g_string_append_c (hdr, '}');
    first = FALSE;
  }

  for (guint i = 0; i < n; i++) {
    guint64 numel = 1;

    if (!names[i] || ndims[i] < 0 || ndims[i] > EHAT_ST_MAX_DIMS
        || (ndims[i] > 0 && !shapes[i])) {
      g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
          "%s: tensor %u: bad name or shape", path, i);
      return FALSE;
    }
    for (int d = 0; d < ndims[i]; d++) {
      if (shapes[i][d] < 0 || (shapes[i][d] != 0
              && numel > (guint64) G_MAXINT64 / 4 / (guint64) shapes[i][d])) {
        g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
            "%s: tensor '%s': bad shape", path, names[i]);
        return FALSE;
      }
      numel *= (guint64) shapes[i][d];
    }
    if (numel > 0 && !data[i]) {
      g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
          "%s: tensor '%s': no data", path, names[i]);
      return FALSE;
    }
    counts[i] = numel;
    if (!first)
      g_string_append_c (hdr, ',');
    first = FALSE;
    append_json_string (hdr, names[i]);
    g_string_append (hdr, ":{\"dtype\":\"F32\",\"shape\":[");
    for (int d = 0; d < ndims[i]; d++)
      g_string_append_printf (hdr, "%s%" G_GINT64_FORMAT, d ? "," : "",
          shapes[i][d]);
    g_string_append_printf (hdr, "],\"data_offsets\":[%" G_GUINT64_FORMAT
        ",%" G_GUINT64_FORMAT "]}", offset, offset + 4 * numel);
    offset += 4 * numel;
  }
  g_string_append_c (hdr, '}');
  /* 8 + header length a multiple of 8 keeps the data 8-byte aligned in a
   * mapping; the format allows trailing spaces in the header for this. */
  while (hdr->len % 8)
    g_string_append_c (hdr, ' ');
  for (int i = 0; i < 8; i++)
    lenbuf[i] = (guint8) (((guint64) hdr->len) >> (8 * i));

  f = g_fopen (path, "wb");
  if (!f) {
    saved_errno = errno;
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_IO, "%s: cannot create: %s",
        path, g_strerror (saved_errno));
    return FALSE;
  }
  ok = write_all (f, lenbuf, 8) && write_all (f, hdr->str, hdr->len);
  for (guint i = 0; ok && i < n; i++) {
#if G_BYTE_ORDER == G_BIG_ENDIAN
    for (guint64 k = 0; ok && k < counts[i]; k++) {
      guint32 u;
      memcpy (&u, &data[i][k], 4);
      u = GUINT32_TO_LE (u);
      ok = write_all (f, &u, 4);
    }
#else
    ok = write_all (f, data[i], (gsize) counts[i] * 4);
#endif
  }
  if (!ok)
    saved_errno = errno;
  if (fclose (f) != 0 && ok) {
    ok = FALSE;
    saved_errno = errno;
  }
  if (!ok) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_IO, "%s: write failed: %s",
        path, g_strerror (saved_errno));
    g_unlink (path);
    return FALSE;
  }
  return TRUE;
}
