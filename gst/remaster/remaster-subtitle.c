/* remaster-subtitle.c — subtitle packets back to the bytes the input
 * stored.
 *
 * Matroska's demuxer hands out plain UTF-8 subtitles (S_TEXT/UTF8) as Pango
 * markup: it escapes each packet (g_markup_escape_text) until it meets the
 * first packet of the stream that contains a markup tag, and from then on
 * passes packets as they are.  Its muxer only takes plain UTF-8.  Undoing
 * exactly that escaping restores the stored bytes: an escaped packet
 * contains no '<' at all, so the first packet that does is the one where
 * the demuxer stopped escaping. */
#include "remaster-subtitle.h"

#include <string.h>

typedef struct
{
  gboolean markup_seen;
} Unescape;

static gchar *
markup_unescape (const gchar * s, gsize len)
{
  static const struct
  {
    const gchar *entity;
    gchar c;
  } map[] = {
    {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'},
    {"&#39;", '\''}, {"&apos;", '\''},
  };
  GString *out = g_string_sized_new (len);
  for (gsize i = 0; i < len;) {
    gboolean done = FALSE;
    if (s[i] == '&')
      for (guint k = 0; k < G_N_ELEMENTS (map) && !done; k++) {
        gsize el = strlen (map[k].entity);
        if (i + el <= len && !strncmp (s + i, map[k].entity, el)) {
          g_string_append_c (out, map[k].c);
          i += el;
          done = TRUE;
        }
      }
    if (!done && s[i] == '&' && i + 2 < len && s[i + 1] == '#') {
      /* other numeric references (control characters) */
      gchar *end = NULL;
      gboolean hex = s[i + 2] == 'x';
      guint64 v = g_ascii_strtoull (s + i + (hex ? 3 : 2), &end,
          hex ? 16 : 10);
      if (end && end < s + len && *end == ';' && v > 0 && v < 0x110000) {
        g_string_append_unichar (out, (gunichar) v);
        i = (gsize) (end - s) + 1;
        done = TRUE;
      }
    }
    if (!done)
      g_string_append_c (out, s[i++]);
  }
  return g_string_free (out, FALSE);
}

static GstPadProbeReturn
on_markup_buffer (GstPad * pad, GstPadProbeInfo * info, gpointer user_data)
{
  Unescape *u = user_data;
  GstBuffer *buf = GST_PAD_PROBE_INFO_BUFFER (info);
  GstMapInfo map;
  if (!gst_buffer_map (buf, &map, GST_MAP_READ))
    return GST_PAD_PROBE_OK;
  u->markup_seen = u->markup_seen || memchr (map.data, '<', map.size);
  if (u->markup_seen) {
    gst_buffer_unmap (buf, &map);
    return GST_PAD_PROBE_OK;
  }
  gchar *text = markup_unescape ((const gchar *) map.data, map.size);
  gst_buffer_unmap (buf, &map);
  GstBuffer *plain = gst_buffer_new_wrapped (text, strlen (text));
  gst_buffer_copy_into (plain, buf, GST_BUFFER_COPY_METADATA, 0, -1);
  gst_buffer_unref (buf);
  GST_PAD_PROBE_INFO_DATA (info) = plain;
  return GST_PAD_PROBE_OK;
}

gboolean
remaster_subtitle_is_markup (const GstCaps * caps)
{
  if (!caps || gst_caps_is_empty (caps))
    return FALSE;
  GstStructure *s = gst_caps_get_structure (caps, 0);
  return gst_structure_has_name (s, "text/x-raw")
      && !g_strcmp0 (gst_structure_get_string (s, "format"), "pango-markup");
}

GstElement *
remaster_subtitle_plain_text (void)
{
  GstElement *setter = gst_element_factory_make ("capssetter", NULL);
  if (!setter)
    return NULL;
  g_autoptr (GstCaps) utf8 = gst_caps_from_string ("text/x-raw, "
      "format=(string)utf8");
  g_object_set (setter, "caps", utf8, "join", FALSE, "replace", TRUE, NULL);
  g_autoptr (GstPad) src = gst_element_get_static_pad (setter, "src");
  gst_pad_add_probe (src, GST_PAD_PROBE_TYPE_BUFFER, on_markup_buffer,
      g_new0 (Unescape, 1), g_free);
  return setter;
}
