/* remaster-manifest.c — manifest.json: (de)serialisation, atomic update. */
#include "remaster-manifest.h"
#include "remaster-error.h"
#include "remaster-fs.h"

#include <json-glib/json-glib.h>

static const gchar *state_names[] = { "pending", "running", "done", "failed" };

const gchar *
remaster_segment_state_name (RemasterSegmentState state)
{
  return (guint) state < G_N_ELEMENTS (state_names) ? state_names[state] : "?";
}

static void
segment_free (gpointer p)
{
  RemasterSegment *s = p;
  g_free (s->host);
  g_free (s->backend);
  g_free (s->error);
  g_free (s);
}

RemasterManifest *
remaster_manifest_new (void)
{
  RemasterManifest *m = g_new0 (RemasterManifest, 1);
  m->segments = g_ptr_array_new_with_free_func (segment_free);
  m->settings.quality = -1;
  m->fps_d = 1;
  m->duration = GST_CLOCK_TIME_NONE;
  return m;
}

void
remaster_manifest_free (RemasterManifest * m)
{
  if (!m)
    return;
  g_free (m->input);
  g_free (m->output);
  g_free (m->settings.model);
  g_free (m->settings.backend);
  g_free (m->settings.precision);
  g_free (m->settings.encoder);
  g_free (m->settings.tile_origin);
  g_free (m->video_caps);
  g_ptr_array_unref (m->segments);
  g_free (m->slurm_array_job);
  g_free (m->slurm_join_job);
  g_free (m);
}

RemasterSegment *
remaster_manifest_get_segment (RemasterManifest * m, guint index)
{
  return index < m->segments->len ? g_ptr_array_index (m->segments, index) :
      NULL;
}

gchar *
remaster_manifest_path (const gchar * workdir)
{
  return g_build_filename (workdir, "manifest.json", NULL);
}

gchar *
remaster_manifest_lock_path (const gchar * workdir)
{
  return g_build_filename (workdir, "manifest.lock", NULL);
}

gchar *
remaster_manifest_segment_path (const gchar * workdir, guint index)
{
  g_autofree gchar *name = g_strdup_printf ("seg-%05u.mkv", index);
  return g_build_filename (workdir, "segments", name, NULL);
}

gboolean
remaster_manifest_exists (const gchar * workdir)
{
  g_autofree gchar *path = remaster_manifest_path (workdir);
  return g_file_test (path, G_FILE_TEST_IS_REGULAR);
}

guint
remaster_manifest_count_state (const RemasterManifest * m,
    RemasterSegmentState state)
{
  guint n = 0;
  for (guint i = 0; i < m->segments->len; i++)
    n += ((RemasterSegment *) g_ptr_array_index (m->segments, i))->state ==
        state;
  return n;
}

guint64
remaster_manifest_frames_done (const RemasterManifest * m)
{
  guint64 n = 0;
  for (guint i = 0; i < m->segments->len; i++) {
    RemasterSegment *s = g_ptr_array_index (m->segments, i);
    if (s->state == REMASTER_SEGMENT_DONE)
      n += s->frames;
  }
  return n;
}

/* ---- writing ---- */

/* Clock times as signed nanoseconds; -1 for GST_CLOCK_TIME_NONE. */
static gint64
time_to_json (GstClockTime t)
{
  return GST_CLOCK_TIME_IS_VALID (t) ? (gint64) t : -1;
}

static GstClockTime
time_from_json (gint64 v)
{
  return v < 0 ? GST_CLOCK_TIME_NONE : (GstClockTime) v;
}

static void
add_string (JsonBuilder * b, const gchar * key, const gchar * value)
{
  json_builder_set_member_name (b, key);
  if (value)
    json_builder_add_string_value (b, value);
  else
    json_builder_add_null_value (b);
}

static void
add_int (JsonBuilder * b, const gchar * key, gint64 value)
{
  json_builder_set_member_name (b, key);
  json_builder_add_int_value (b, value);
}

static gchar *
manifest_to_json (const RemasterManifest * m)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  add_string (b, "format", REMASTER_MANIFEST_FORMAT);
  add_string (b, "input", m->input);
  add_string (b, "output", m->output);
  add_int (b, "input-size", m->input_size);
  add_int (b, "input-mtime", m->input_mtime);

  json_builder_set_member_name (b, "settings");
  json_builder_begin_object (b);
  add_string (b, "model", m->settings.model);
  add_int (b, "scale", m->settings.scale);
  add_string (b, "backend", m->settings.backend);
  add_string (b, "precision", m->settings.precision);
  add_int (b, "ensemble", m->settings.ensemble);
  add_string (b, "encoder", m->settings.encoder);
  add_int (b, "quality", m->settings.quality);
  add_int (b, "scale-to-width", m->settings.scale_to_width);
  add_int (b, "scale-to-height", m->settings.scale_to_height);
  json_builder_set_member_name (b, "segment-seconds");
  json_builder_add_double_value (b, m->settings.segment_seconds);
  add_int (b, "tile-width", m->settings.tile_width);
  add_int (b, "tile-height", m->settings.tile_height);
  add_string (b, "tile-origin", m->settings.tile_origin);
  json_builder_end_object (b);

  json_builder_set_member_name (b, "video");
  json_builder_begin_object (b);
  add_string (b, "caps", m->video_caps);
  add_int (b, "width", m->width);
  add_int (b, "height", m->height);
  add_int (b, "fps-n", m->fps_n);
  add_int (b, "fps-d", m->fps_d);
  add_int (b, "frames", (gint64) m->frames);
  add_int (b, "skipped-frames", (gint64) m->skipped);
  add_int (b, "duration", time_to_json (m->duration));
  json_builder_end_object (b);
  add_int (b, "audio-streams", m->n_audio);
  add_int (b, "subtitle-streams", m->n_subtitle);

  json_builder_set_member_name (b, "segments");
  json_builder_begin_array (b);
  for (guint i = 0; i < m->segments->len; i++) {
    RemasterSegment *s = g_ptr_array_index (m->segments, i);
    json_builder_begin_object (b);
    add_int (b, "index", s->index);
    add_int (b, "start", time_to_json (s->start));
    add_int (b, "end", time_to_json (s->end));
    add_int (b, "frames", (gint64) s->frames);
    add_string (b, "state", remaster_segment_state_name (s->state));
    add_int (b, "attempts", s->attempts);
    add_int (b, "frames-out", (gint64) s->frames_out);
    add_int (b, "bytes", (gint64) s->bytes);
    json_builder_set_member_name (b, "seconds");
    json_builder_add_double_value (b, s->seconds);
    json_builder_set_member_name (b, "setup-seconds");
    json_builder_add_double_value (b, s->setup_seconds);
    add_string (b, "host", s->host);
    add_int (b, "pid", s->pid);
    add_string (b, "backend", s->backend);
    add_int (b, "tile-width", s->tile_width);
    add_int (b, "tile-height", s->tile_height);
    add_string (b, "error", s->error);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);

  json_builder_set_member_name (b, "joined");
  json_builder_add_boolean_value (b, m->joined);
  add_string (b, "slurm-array-job", m->slurm_array_job);
  add_string (b, "slurm-join-job", m->slurm_join_job);
  json_builder_end_object (b);

  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  json_generator_set_pretty (gen, TRUE);
  gchar *text = json_generator_to_data (gen, NULL);
  gchar *with_newline = g_strconcat (text, "\n", NULL);
  g_free (text);
  return with_newline;
}

gboolean
remaster_manifest_save (const RemasterManifest * m, const gchar * workdir,
    GError ** error)
{
  g_autofree gchar *path = remaster_manifest_path (workdir);
  g_autofree gchar *text = manifest_to_json (m);
  return remaster_fs_write_atomic (path, text, -1, error);
}

/* ---- reading ---- */

static const gchar *
get_string (JsonObject * o, const gchar * key)
{
  JsonNode *n = json_object_get_member (o, key);
  return n && JSON_NODE_HOLDS_VALUE (n)
      && json_node_get_value_type (n) == G_TYPE_STRING ?
      json_node_get_string (n) : NULL;
}

static gint64
get_int (JsonObject * o, const gchar * key, gint64 fallback)
{
  JsonNode *n = json_object_get_member (o, key);
  if (!n || !JSON_NODE_HOLDS_VALUE (n))
    return fallback;
  GType t = json_node_get_value_type (n);
  if (t == G_TYPE_INT64)
    return json_node_get_int (n);
  if (t == G_TYPE_DOUBLE)
    return (gint64) json_node_get_double (n);
  return fallback;
}

static gdouble
get_double (JsonObject * o, const gchar * key, gdouble fallback)
{
  JsonNode *n = json_object_get_member (o, key);
  if (!n || !JSON_NODE_HOLDS_VALUE (n))
    return fallback;
  GType t = json_node_get_value_type (n);
  if (t == G_TYPE_DOUBLE)
    return json_node_get_double (n);
  if (t == G_TYPE_INT64)
    return (gdouble) json_node_get_int (n);
  return fallback;
}

static JsonObject *
get_object (JsonObject * o, const gchar * key)
{
  JsonNode *n = json_object_get_member (o, key);
  return n && JSON_NODE_HOLDS_OBJECT (n) ? json_node_get_object (n) : NULL;
}

static gboolean
state_from_name (const gchar * name, RemasterSegmentState * state)
{
  for (guint i = 0; name && i < G_N_ELEMENTS (state_names); i++)
    if (g_str_equal (name, state_names[i])) {
      *state = (RemasterSegmentState) i;
      return TRUE;
    }
  return FALSE;
}

static RemasterManifest *
manifest_from_json (const gchar * path, JsonNode * root, GError ** error)
{
  g_autoptr (RemasterManifest) m = NULL;
  if (!root || !JSON_NODE_HOLDS_OBJECT (root))
    goto invalid;
  JsonObject *o = json_node_get_object (root);
  if (g_strcmp0 (get_string (o, "format"), REMASTER_MANIFEST_FORMAT) != 0) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_MANIFEST,
        "%s is not an %s manifest (format %s)", path,
        REMASTER_MANIFEST_FORMAT, get_string (o, "format") ?
        get_string (o, "format") : "missing");
    return NULL;
  }
  m = remaster_manifest_new ();
  m->input = g_strdup (get_string (o, "input"));
  m->output = g_strdup (get_string (o, "output"));
  m->input_size = get_int (o, "input-size", -1);
  m->input_mtime = get_int (o, "input-mtime", -1);
  JsonObject *st = get_object (o, "settings");
  JsonObject *v = get_object (o, "video");
  JsonNode *segs = json_object_get_member (o, "segments");
  if (!m->input || !m->output || !st || !v || !segs
      || !JSON_NODE_HOLDS_ARRAY (segs))
    goto invalid;

  m->settings.model = g_strdup (get_string (st, "model"));
  m->settings.scale = (gint) get_int (st, "scale", 0);
  m->settings.backend = g_strdup (get_string (st, "backend"));
  m->settings.precision = g_strdup (get_string (st, "precision") ?
      get_string (st, "precision") : "auto");
  /* manifests written before the option have no ensemble: 1, off */
  m->settings.ensemble = (gint) get_int (st, "ensemble", 1);
  m->settings.encoder = g_strdup (get_string (st, "encoder"));
  m->settings.quality = (gint) get_int (st, "quality", -1);
  m->settings.scale_to_width = (gint) get_int (st, "scale-to-width", 0);
  m->settings.scale_to_height = (gint) get_int (st, "scale-to-height", 0);
  m->settings.segment_seconds = get_double (st, "segment-seconds", 0);
  /* older manifests: automatic, not fixed yet */
  m->settings.tile_width = (gint) get_int (st, "tile-width", 0);
  m->settings.tile_height = (gint) get_int (st, "tile-height", 0);
  m->settings.tile_origin = g_strdup (get_string (st, "tile-origin"));
  if (m->settings.tile_width < 0 || m->settings.tile_height < 0
      || m->settings.tile_width > 8192 || m->settings.tile_height > 8192
      || !m->settings.tile_width != !m->settings.tile_height)
    goto invalid;
  if (!m->settings.model || !m->settings.encoder || !m->settings.backend)
    goto invalid;

  m->video_caps = g_strdup (get_string (v, "caps"));
  m->width = (gint) get_int (v, "width", 0);
  m->height = (gint) get_int (v, "height", 0);
  m->fps_n = (gint) get_int (v, "fps-n", 0);
  m->fps_d = (gint) get_int (v, "fps-d", 1);
  m->frames = (guint64) get_int (v, "frames", 0);
  m->skipped = (guint64) get_int (v, "skipped-frames", 0);
  m->duration = time_from_json (get_int (v, "duration", -1));
  m->n_audio = (guint) get_int (o, "audio-streams", 0);
  m->n_subtitle = (guint) get_int (o, "subtitle-streams", 0);

  JsonArray *a = json_node_get_array (segs);
  for (guint i = 0; i < json_array_get_length (a); i++) {
    JsonNode *n = json_array_get_element (a, i);
    if (!JSON_NODE_HOLDS_OBJECT (n))
      goto invalid;
    JsonObject *so = json_node_get_object (n);
    RemasterSegment *s = g_new0 (RemasterSegment, 1);
    g_ptr_array_add (m->segments, s);
    s->index = (guint) get_int (so, "index", -1);
    s->start = time_from_json (get_int (so, "start", -1));
    s->end = time_from_json (get_int (so, "end", -1));
    s->frames = (guint64) get_int (so, "frames", 0);
    s->attempts = (guint) get_int (so, "attempts", 0);
    s->frames_out = (guint64) get_int (so, "frames-out", 0);
    s->bytes = (guint64) get_int (so, "bytes", 0);
    s->seconds = get_double (so, "seconds", 0);
    s->setup_seconds = get_double (so, "setup-seconds", 0);
    s->host = g_strdup (get_string (so, "host"));
    s->pid = get_int (so, "pid", 0);
    s->backend = g_strdup (get_string (so, "backend"));
    s->tile_width = (gint) get_int (so, "tile-width", 0);
    s->tile_height = (gint) get_int (so, "tile-height", 0);
    s->error = g_strdup (get_string (so, "error"));
    if (s->index != i || !state_from_name (get_string (so, "state"),
            &s->state))
      goto invalid;
  }

  JsonNode *j = json_object_get_member (o, "joined");
  m->joined = j && JSON_NODE_HOLDS_VALUE (j) && json_node_get_boolean (j);
  m->slurm_array_job = g_strdup (get_string (o, "slurm-array-job"));
  m->slurm_join_job = g_strdup (get_string (o, "slurm-join-job"));
  return g_steal_pointer (&m);

invalid:
  g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_MANIFEST,
      "%s is damaged or incomplete (missing or invalid members)", path);
  return NULL;
}

RemasterManifest *
remaster_manifest_load (const gchar * workdir, GError ** error)
{
  g_autofree gchar *path = remaster_manifest_path (workdir);
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GError) err = NULL;
  if (!json_parser_load_from_file (parser, path, &err)) {
    if (g_error_matches (err, G_FILE_ERROR, G_FILE_ERROR_NOENT))
      g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_MANIFEST,
          "%s has no manifest: not an ehat-remaster work directory, or the "
          "job was never planned", workdir);
    else
      g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_MANIFEST,
          "Cannot read %s: %s", path, err->message);
    return NULL;
  }
  return manifest_from_json (path, json_parser_get_root (parser), error);
}

gboolean
remaster_manifest_update (const gchar * workdir, RemasterManifestFunc func,
    gpointer user_data, GError ** error)
{
  g_autofree gchar *lock_path = remaster_manifest_lock_path (workdir);
  g_autoptr (RemasterLock) lock = remaster_lock_acquire (lock_path, TRUE,
      error);
  if (!lock)
    return FALSE;
  g_autoptr (RemasterManifest) m = remaster_manifest_load (workdir, error);
  if (!m)
    return FALSE;
  if (!func (m, user_data, error))
    return FALSE;
  return remaster_manifest_save (m, workdir, error);
}
