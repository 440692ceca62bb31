/* The network configuration from a model's __metadata__ (DESIGN.md §2).
 *
 * Every value is a string: numbers and lists are JSON text ("180",
 * "[6, 6]", "0.5"), words are plain ("ehat", "pixelshuffle").  Numbers are
 * parsed with GLib's ASCII / json-glib functions so that the C locale of
 * the host application never changes what a model means.  Everything the
 * network later divides by, indexes with or allocates from is range-checked
 * here, so the rest of libehat can trust an EhatConfig. */
#include "ehat-model-private.h"

#include <errno.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <string.h>

/* Generous ceilings far above any real model; they only keep products such
 * as C·C·9 or (2·ws−1)²·heads comfortably inside int. */
#define MAX_EMBED_DIM 8192
#define MAX_DEPTH 1024
#define MAX_WINDOW 256
#define MAX_HIDDEN (8 * MAX_EMBED_DIM)

static const char *
require (GHashTable *md, const char *key, GError **error)
{
  const char *v = g_hash_table_lookup (md, key);

  if (!v)
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_CONFIG,
        "missing required metadata key '%s'", key);
  return v;
}

static gboolean
bad_value (const char *key, const char *value, const char *why,
    GError **error)
{
  g_set_error (error, EHAT_ERROR, EHAT_ERROR_CONFIG,
      "bad metadata value '%s' for '%s': %s", value, key, why);
  return FALSE;
}

static gboolean
get_int (GHashTable *md, const char *key, int min, int max, int *out,
    GError **error)
{
  const char *v = require (md, key, error);
  g_autofree char *s = NULL;
  gint64 n;

  if (!v)
    return FALSE;
  s = g_strstrip (g_strdup (v));
  if (!g_ascii_string_to_signed (s, 10, min, max, &n, NULL)) {
    g_autofree char *why = g_strdup_printf ("expected an integer in [%d, %d]",
        min, max);
    return bad_value (key, v, why, error);
  }
  *out = (int) n;
  return TRUE;
}

static gboolean
get_double (GHashTable *md, const char *key, double *out, GError **error)
{
  const char *v = require (md, key, error);
  g_autofree char *s = NULL;
  char *end = NULL;
  double d;

  if (!v)
    return FALSE;
  s = g_strstrip (g_strdup (v));
  errno = 0;
  d = g_ascii_strtod (s, &end);
  if (*s == '\0' || *end != '\0' || errno == ERANGE || !isfinite (d))
    return bad_value (key, v, "expected a finite number", error);
  *out = d;
  return TRUE;
}

/* A JSON array of numbers; ints only when `integers`.  Returns the count
 * (≤ max) in *n. */
static gboolean
get_list (GHashTable *md, const char *key, gboolean integers, int max,
    double *vals, int *n, GError **error)
{
  const char *v = require (md, key, error);
  g_autoptr (JsonParser) parser = NULL;
  JsonNode *root;
  JsonArray *arr;
  guint len;

  if (!v)
    return FALSE;
  parser = json_parser_new_immutable ();
  if (!json_parser_load_from_data (parser, v, -1, NULL)
      || !(root = json_parser_get_root (parser))
      || !JSON_NODE_HOLDS_ARRAY (root))
    return bad_value (key, v, "expected a JSON list", error);
  arr = json_node_get_array (root);
  len = json_array_get_length (arr);
  if (len == 0 || len > (guint) max) {
    g_autofree char *why = g_strdup_printf ("expected 1 to %d entries", max);
    return bad_value (key, v, why, error);
  }
  for (guint i = 0; i < len; i++) {
    JsonNode *e = json_array_get_element (arr, i);
    GType t = JSON_NODE_HOLDS_VALUE (e) ? json_node_get_value_type (e)
        : G_TYPE_INVALID;

    if (t == G_TYPE_INT64) {
      gint64 x = json_node_get_int (e);
      if (integers && (x < G_MININT || x > G_MAXINT))
        return bad_value (key, v, "entry out of range", error);
      vals[i] = (double) x;
    } else if (t == G_TYPE_DOUBLE && !integers) {
      vals[i] = json_node_get_double (e);
      if (!isfinite (vals[i]))
        return bad_value (key, v, "entry not finite", error);
    } else {
      return bad_value (key, v, integers ? "entries must be integers"
          : "entries must be numbers", error);
    }
  }
  *n = (int) len;
  return TRUE;
}

static gboolean
get_word (GHashTable *md, const char *key, const char *const *allowed,
    int *index, GError **error)
{
  const char *v = require (md, key, error);
  g_autofree char *list = NULL;
  g_autofree char *why = NULL;

  if (!v)
    return FALSE;
  for (int i = 0; allowed[i]; i++) {
    if (strcmp (v, allowed[i]) == 0) {
      if (index)
        *index = i;
      return TRUE;
    }
  }
  list = g_strjoinv (", ", (char **) allowed);
  why = g_strdup_printf ("expected one of: %s", list);
  return bad_value (key, v, why, error);
}

gboolean
ehat_config_from_metadata (GHashTable *md, EhatConfig *cfg, GError **error)
{
  static const char *const archs[] = { "hat", "ehat", NULL };
  static const char *const upsamplers[] = { "pixelshuffle", NULL };
  static const char *const resis[] = { "1conv", NULL };
  static const char *const bools[] = { "false", "true", NULL };
  EhatConfig c = { 0 };
  double depths[EHAT_MAX_GROUPS], heads[EHAT_MAX_GROUPS];
  double mean[EHAT_MAX_GROUPS];
  double d;
  const char *format;
  int n_heads, n_mean, arch, danet = 0;

  g_return_val_if_fail (md != NULL, FALSE);
  g_return_val_if_fail (cfg != NULL, FALSE);

  /* "ehat-sr/1", possibly with a minor version; not "ehat-sr/10" */
  if (!(format = require (md, "format", error)))
    return FALSE;
  if (!g_str_has_prefix (format, "ehat-sr/1")
      || g_ascii_isdigit (format[strlen ("ehat-sr/1")]))
    return bad_value ("format", format, "this libehat reads ehat-sr/1",
        error);

  if (!get_word (md, "arch", archs, &arch, error))
    return FALSE;
  c.arch = arch ? EHAT_ARCH_EHAT : EHAT_ARCH_HAT;

  if (!get_int (md, "upscale", 2, 4, &c.upscale, error)
      || !get_int (md, "embed_dim", 1, MAX_EMBED_DIM, &c.embed_dim, error))
    return FALSE;

  if (!get_list (md, "depths", TRUE, EHAT_MAX_GROUPS, depths, &c.n_groups,
          error)
      || !get_list (md, "num_heads", TRUE, EHAT_MAX_GROUPS, heads, &n_heads,
          error))
    return FALSE;
  if (n_heads != c.n_groups) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_CONFIG,
        "metadata 'depths' (%d groups) and 'num_heads' (%d entries) "
        "differ in length", c.n_groups, n_heads);
    return FALSE;
  }
  for (int l = 0; l < c.n_groups; l++) {
    c.depths[l] = (int) depths[l];
    c.num_heads[l] = (int) heads[l];
    if (c.depths[l] < 1 || c.depths[l] > MAX_DEPTH)
      return bad_value ("depths", g_hash_table_lookup (md, "depths"),
          "every group needs 1 to 1024 blocks", error);
    if (c.num_heads[l] < 1)
      return bad_value ("num_heads", g_hash_table_lookup (md, "num_heads"),
          "every group needs at least one head", error);
    if (c.embed_dim % c.num_heads[l] != 0) {
      g_autofree char *why = g_strdup_printf ("embed_dim %d is not a "
          "multiple of %d heads", c.embed_dim, c.num_heads[l]);
      return bad_value ("num_heads", g_hash_table_lookup (md, "num_heads"),
          why, error);
    }
  }

  if (!get_int (md, "window_size", 2, MAX_WINDOW, &c.window_size, error))
    return FALSE;
  if (c.window_size % 2 != 0)
    return bad_value ("window_size", g_hash_table_lookup (md, "window_size"),
        "must be even (shifted windows move by window_size/2)", error);

  if (!get_int (md, "compress_ratio", 1, c.embed_dim, &c.compress_ratio,
          error)
      || !get_int (md, "squeeze_factor", 1, c.embed_dim, &c.squeeze_factor,
          error))
    return FALSE;
  if (c.embed_dim % c.compress_ratio != 0)
    return bad_value ("compress_ratio",
        g_hash_table_lookup (md, "compress_ratio"),
        "must divide embed_dim", error);
  if (c.embed_dim % c.squeeze_factor != 0)
    return bad_value ("squeeze_factor",
        g_hash_table_lookup (md, "squeeze_factor"),
        "must divide embed_dim", error);

  if (!get_double (md, "conv_scale", &d, error))
    return FALSE;
  c.conv_scale = (float) d;

  if (!get_double (md, "overlap_ratio", &d, error))
    return FALSE;
  if (d < 0.0 || d > 4.0)
    return bad_value ("overlap_ratio",
        g_hash_table_lookup (md, "overlap_ratio"), "expected 0 to 4", error);
  c.overlap_ratio = (float) d;
  /* int() in Python truncates; the product is taken in double there too */
  c.overlap_window = c.window_size + (int) (c.window_size * d);
  /* OCAB pads the key window by (wse − ws)/2 on each side; an odd
   * difference would give a different number of key windows than query
   * windows in the original unfold */
  if ((c.overlap_window - c.window_size) % 2 != 0)
    return bad_value ("overlap_ratio",
        g_hash_table_lookup (md, "overlap_ratio"),
        "window_size * overlap_ratio must truncate to an even number",
        error);

  if (!get_double (md, "mlp_ratio", &d, error))
    return FALSE;
  if (d <= 0.0 || d * c.embed_dim >= MAX_HIDDEN + 1
      || (int) (c.embed_dim * d) < 1)
    return bad_value ("mlp_ratio", g_hash_table_lookup (md, "mlp_ratio"),
        "hidden width embed_dim * mlp_ratio out of range", error);
  c.mlp_ratio = (float) d;
  c.mlp_hidden = (int) (c.embed_dim * d);

  if (!get_double (md, "img_range", &d, error))
    return FALSE;
  if (d <= 0.0)
    return bad_value ("img_range", g_hash_table_lookup (md, "img_range"),
        "must be positive", error);
  c.img_range = (float) d;

  if (!get_list (md, "rgb_mean", FALSE, EHAT_MAX_GROUPS, mean, &n_mean, error))
    return FALSE;
  if (n_mean != 3)
    return bad_value ("rgb_mean", g_hash_table_lookup (md, "rgb_mean"),
        "expected 3 numbers", error);
  for (int i = 0; i < 3; i++)
    c.rgb_mean[i] = (float) mean[i];

  if (!get_word (md, "upsampler", upsamplers, NULL, error)
      || !get_word (md, "resi_connection", resis, NULL, error))
    return FALSE;

  if (g_hash_table_contains (md, "danet")
      && !get_word (md, "danet", bools, &danet, error))
    return FALSE;
  c.danet = danet != 0;
  if (c.danet && c.embed_dim < 8)
    return bad_value ("danet", "true",
        "DANet needs embed_dim >= 8 (its query width is embed_dim/8)", error);

  /* set by the model loader from the tensors */
  c.ape = FALSE;
  c.ape_tokens = 0;
  c.ape_size = 0;

  *cfg = c;
  return TRUE;
}

int
ehat_config_n_w0 (const EhatConfig *cfg)
{
  int n = 1 + cfg->n_groups;

  for (int l = 0; l < cfg->n_groups; l++)
    n += 1 + 2 * cfg->depths[l];
  return n;
}

int
ehat_config_n_w1 (const EhatConfig *cfg)
{
  int n = (cfg->ape ? 1 : 0) + 1;

  for (int l = 0; l < cfg->n_groups; l++)
    n += 2 * cfg->depths[l] + 1;
  return n;
}
