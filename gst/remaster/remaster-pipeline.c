/* remaster-pipeline.c — GStreamer helpers shared by every step. */
#include "remaster-pipeline.h"
#include "remaster-error.h"

#include <string.h>

GST_DEBUG_CATEGORY (remaster_debug);

void
remaster_debug_init (void)
{
  GST_DEBUG_CATEGORY_INIT (remaster_debug, "ehat-remaster", 0,
      "ehat-remaster: probe, workers, join");
}

RemasterStreamKind
remaster_stream_kind (const GstCaps * caps)
{
  if (!caps || gst_caps_is_empty (caps) || gst_caps_is_any (caps))
    return REMASTER_STREAM_OTHER;
  const gchar *name = gst_structure_get_name (gst_caps_get_structure (caps,
          0));
  if (g_str_has_prefix (name, "video/"))
    return REMASTER_STREAM_VIDEO;
  if (g_str_has_prefix (name, "audio/"))
    return REMASTER_STREAM_AUDIO;
  if (g_str_has_prefix (name, "text/") || g_str_has_prefix (name, "subtitle/")
      || g_str_has_prefix (name, "subpicture/")
      || g_str_has_prefix (name, "closedcaption/")
      || g_str_has_prefix (name, "application/x-subtitle")
      || g_str_equal (name, "application/x-ssa")
      || g_str_equal (name, "application/x-ass")
      || g_str_equal (name, "application/x-usf"))
    return REMASTER_STREAM_SUBTITLE;
  return REMASTER_STREAM_OTHER;
}

RemasterStreamKind
remaster_pad_stream_kind (GstPad * pad)
{
  GstCaps *caps = gst_pad_get_current_caps (pad);
  if (!caps)
    caps = gst_pad_query_caps (pad, NULL);
  RemasterStreamKind kind = remaster_stream_kind (caps);
  if (caps)
    gst_caps_unref (caps);
  return kind;
}

static const gchar *
package_of (const gchar * factory)
{
  static const struct
  {
    const gchar *prefix, *package;
  } map[] = {
    {"ehatsr", "gst-ehatsr (set GST_PLUGIN_PATH to its build/gst directory)"},
    {"x264", "gstreamer1.0-plugins-ugly"},
    {"x265", "gstreamer1.0-plugins-bad"},
    {"nv", "gstreamer1.0-plugins-bad (and an NVIDIA GPU with NVENC)"},
    {"h26", "gstreamer1.0-plugins-bad"},
    {"av", "gstreamer1.0-libav"},
    {"vp", "gstreamer1.0-plugins-good"},
    {"matroska", "gstreamer1.0-plugins-good"},
    {"webm", "gstreamer1.0-plugins-good"},
  };
  for (guint i = 0; i < G_N_ELEMENTS (map); i++)
    if (g_str_has_prefix (factory, map[i].prefix))
      return map[i].package;
  return "gstreamer1.0-plugins-base";
}

GstElement *
remaster_pad_producer (GstPad * pad)
{
  /* parsebin hands out its own ghost pad; the element that made the
   * stream is the parent of its target */
  GstPad *target = GST_IS_GHOST_PAD (pad) ?
      gst_ghost_pad_get_target (GST_GHOST_PAD (pad)) : gst_object_ref (pad);
  GstElement *parent = target ? gst_pad_get_parent_element (target) : NULL;
  if (target)
    gst_object_unref (target);
  return parent;
}

static gboolean
continue_past (GstElement * bin, GstPad * pad, GstCaps * caps,
    gpointer user_data)
{
  GstElement *parent = remaster_pad_producer (pad);
  gboolean demuxed = FALSE;
  if (parent) {
    GstElementFactory *f = gst_element_get_factory (parent);
    const gchar *klass = f ? gst_element_factory_get_metadata (f,
        GST_ELEMENT_METADATA_KLASS) : NULL;
    demuxed = klass && strstr (klass, "Demux");
    gst_object_unref (parent);
  }
  return !demuxed;
}

GstElement *
remaster_make_demuxbin (GError ** error)
{
  GstElement *bin = remaster_make ("parsebin", NULL, error);
  if (bin)
    g_signal_connect (bin, "autoplug-continue", G_CALLBACK (continue_past),
        NULL);
  return bin;
}

GstElement *
remaster_make (const gchar * factory, const gchar * name, GError ** error)
{
  GstElement *e = gst_element_factory_make (factory, name);
  if (!e)
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_ELEMENT,
        "GStreamer element '%s' is not installed (package: %s)", factory,
        package_of (factory));
  return e;
}

void
remaster_error_from_message (GstMessage * msg, const gchar * what,
    GError ** error)
{
  g_autoptr (GError) err = NULL;
  g_autofree gchar *debug = NULL;
  gst_message_parse_error (msg, &err, &debug);
  g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_PIPELINE,
      "%s: %s (from %s)%s%s", what, err ? err->message : "unknown error",
      GST_OBJECT_NAME (GST_MESSAGE_SRC (msg)), debug ? "\n  " : "",
      debug ? debug : "");
}

gboolean
remaster_bus_poll (GstBus * bus, GstClockTime timeout, gboolean * eos,
    const gchar * what, GError ** error)
{
  *eos = FALSE;
  GstMessage *msg = gst_bus_timed_pop_filtered (bus, timeout,
      GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  if (!msg)
    return TRUE;
  gboolean ok = TRUE;
  if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR) {
    remaster_error_from_message (msg, what, error);
    ok = FALSE;
  } else {
    *eos = TRUE;
  }
  gst_message_unref (msg);
  return ok;
}

static gboolean
set_state (GstElement * pipeline, GstState state, gboolean wait,
    const gchar * what, GError ** error)
{
  GstStateChangeReturn r = gst_element_set_state (pipeline, state);
  if (wait && r == GST_STATE_CHANGE_ASYNC)
    r = gst_element_get_state (pipeline, NULL, NULL, GST_CLOCK_TIME_NONE);
  if (r != GST_STATE_CHANGE_FAILURE)
    return TRUE;
  g_autoptr (GstBus) bus = gst_element_get_bus (pipeline);
  GstMessage *msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);
  if (msg) {
    remaster_error_from_message (msg, what, error);
    gst_message_unref (msg);
  } else {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_PIPELINE,
        "%s: the pipeline could not be started", what);
  }
  return FALSE;
}

gboolean
remaster_set_state_wait (GstElement * pipeline, GstState state,
    const gchar * what, GError ** error)
{
  return set_state (pipeline, state, TRUE, what, error);
}

gboolean
remaster_set_state (GstElement * pipeline, GstState state,
    const gchar * what, GError ** error)
{
  return set_state (pipeline, state, FALSE, what, error);
}

gboolean
remaster_run_to_eos (GstElement * pipeline, const gchar * what,
    GError ** error)
{
  gboolean ok = remaster_set_state_wait (pipeline, GST_STATE_PLAYING, what,
      error);
  if (ok) {
    g_autoptr (GstBus) bus = gst_element_get_bus (pipeline);
    gboolean eos = FALSE;
    while (ok && !eos)
      ok = remaster_bus_poll (bus, GST_CLOCK_TIME_NONE, &eos, what, error);
  }
  gst_element_set_state (pipeline, GST_STATE_NULL);
  return ok;
}

gboolean
remaster_link_to_fakesink (GstBin * bin, GstPad * pad)
{
  GstElement *sink = gst_element_factory_make ("fakesink", NULL);
  g_object_set (sink, "sync", FALSE, "async", FALSE, NULL);
  gst_bin_add (bin, sink);
  g_autoptr (GstPad) sinkpad = gst_element_get_static_pad (sink, "sink");
  gboolean ok = gst_pad_link (pad, sinkpad) == GST_PAD_LINK_OK;
  gst_element_sync_state_with_parent (sink);
  return ok;
}
