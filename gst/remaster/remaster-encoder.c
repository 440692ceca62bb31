/* remaster-encoder.c — encoder table: factory, quality knob, parser. */
#include "remaster-encoder.h"
#include "remaster-error.h"
#include "remaster-pipeline.h"

#include <string.h>

typedef struct
{
  const gchar *name;
  const gchar *factories[3];    /* first installed one wins */
  const gchar *quality_name;    /* what --quality sets, for the report */
  gint quality_default, quality_min, quality_max;
  const gchar *parser;          /* needed before matroskamux, or NULL */
  gboolean lossless;
} EncoderInfo;

static const EncoderInfo encoders[] = {
  /* x264 "qual" is CRF; avc output with codec_data goes into Matroska
   * without a parser. */
  {"x264", {"x264enc"}, "crf", 18, 0, 50, NULL, FALSE},
  /* x265enc only writes byte-stream; h265parse makes hvc1 for Matroska. */
  {"x265", {"x265enc"}, "crf", 20, 0, 51, "h265parse", FALSE},
  {"nvh264", {"nvautogpuh264enc", "nvh264enc"}, "qp", 20, 0, 51,
      "h264parse", FALSE},
  {"nvh265", {"nvautogpuh265enc", "nvh265enc"}, "qp", 22, 0, 51,
      "h265parse", FALSE},
  {"vp9", {"vp9enc"}, "cq-level", 24, 0, 63, NULL, FALSE},
  {"vp8", {"vp8enc"}, "cq-level", 10, 0, 63, NULL, FALSE},
  {"ffv1", {"avenc_ffv1"}, NULL, 0, 0, 0, NULL, TRUE},
};

static const EncoderInfo *
find_info (const gchar * name)
{
  for (guint i = 0; i < G_N_ELEMENTS (encoders); i++)
    if (g_str_equal (encoders[i].name, name))
      return &encoders[i];
  return NULL;
}

static const gchar *
installed_factory (const EncoderInfo * info)
{
  for (guint i = 0; i < G_N_ELEMENTS (info->factories) && info->factories[i];
      i++) {
    GstElementFactory *f = gst_element_factory_find (info->factories[i]);
    if (f) {
      gst_object_unref (f);
      return info->factories[i];
    }
  }
  return NULL;
}

const gchar *
remaster_encoder_default (void)
{
  static const gchar *order[] = { "x264", "vp9", "ffv1" };
  for (guint i = 0; i < G_N_ELEMENTS (order); i++)
    if (installed_factory (find_info (order[i])))
      return order[i];
  return "x264";
}

gboolean
remaster_encoder_is_lossless (const gchar * name)
{
  const EncoderInfo *info = find_info (name);
  return info && info->lossless;
}

static gboolean
is_video_encoder (GstElementFactory * f)
{
  const gchar *klass = gst_element_factory_get_metadata (f,
      GST_ELEMENT_METADATA_KLASS);
  return klass && strstr (klass, "Encoder") && strstr (klass, "Video");
}

gboolean
remaster_encoder_check (const gchar * name, gint quality, GError ** error)
{
  const EncoderInfo *info = find_info (name);
  if (!info) {
    GstElementFactory *f = gst_element_factory_find (name);
    gboolean ok = f && is_video_encoder (f);
    if (f)
      gst_object_unref (f);
    if (!ok) {
      g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_ARGS,
          "unknown encoder '%s' (x264, x265, nvh264, nvh265, vp9, vp8, ffv1, "
          "or the name of an installed GStreamer video encoder)", name);
      return FALSE;
    }
    if (quality >= 0) {
      g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_ARGS,
          "--quality is only understood for the named encoders; set the "
          "properties of '%s' by using one of them", name);
      return FALSE;
    }
    return TRUE;
  }
  const gchar *factory = installed_factory (info);
  if (!factory) {
    GstElement *e = remaster_make (info->factories[0], NULL, error);
    g_assert (e == NULL);
    g_prefix_error (error, "encoder %s: ", name);
    return FALSE;
  }
  if (info->parser) {
    GstElementFactory *f = gst_element_factory_find (info->parser);
    if (!f) {
      GstElement *e = remaster_make (info->parser, NULL, error);
      g_assert (e == NULL);
      g_prefix_error (error, "encoder %s: ", name);
      return FALSE;
    }
    gst_object_unref (f);
  }
  if (quality >= 0 && !info->quality_name) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_ARGS,
        "encoder %s is lossless: --quality does not apply", name);
    return FALSE;
  }
  if (quality >= 0 && (quality < info->quality_min
          || quality > info->quality_max)) {
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_ARGS,
        "--quality %d is out of range for %s (%s %d..%d)", quality, name,
        info->quality_name, info->quality_min, info->quality_max);
    return FALSE;
  }
  return TRUE;
}

/* Sets a property only where the element has it: NVENC elements differ
 * between GStreamer versions and between the per-device and auto-GPU
 * variants; a missing knob must not stop the job. */
static void
set_arg_if_present (GstElement * e, const gchar * prop, const gchar * value)
{
  if (g_object_class_find_property (G_OBJECT_GET_CLASS (e), prop))
    gst_util_set_object_arg (G_OBJECT (e), prop, value);
}

gboolean
remaster_encoder_make (const gchar * name, gint quality, gint device_id,
    GstElement ** encoder, GstElement ** parser, GError ** error)
{
  *encoder = NULL;
  *parser = NULL;
  if (!remaster_encoder_check (name, quality, error))
    return FALSE;
  const EncoderInfo *info = find_info (name);
  if (!info) {
    *encoder = remaster_make (name, NULL, error);
    return *encoder != NULL;
  }
  GstElement *e = remaster_make (installed_factory (info), NULL, error);
  if (!e)
    return FALSE;
  gint q = quality >= 0 ? quality : info->quality_default;
  g_autofree gchar *qs = g_strdup_printf ("%d", q);
  g_autofree gchar *dev = g_strdup_printf ("%d", device_id);

  if (g_str_equal (name, "x264")) {
    gst_util_set_object_arg (G_OBJECT (e), "pass", "qual");
    g_object_set (e, "quantizer", (guint) q, NULL);
  } else if (g_str_equal (name, "x265")) {
    g_autofree gchar *opts = g_strdup_printf ("crf=%d", q);
    g_object_set (e, "option-string", opts, NULL);
  } else if (g_str_has_prefix (name, "nvh26")) {
    set_arg_if_present (e, "cuda-device-id", dev);
    /* constant QP: nvautogpu* call it "cqp", the older nvh26xenc "constqp" */
    if (g_str_has_prefix (GST_OBJECT_NAME (gst_element_get_factory (e)),
            "nvautogpu")) {
      set_arg_if_present (e, "rc-mode", "cqp");
      set_arg_if_present (e, "qp-i", qs);
      set_arg_if_present (e, "qp-p", qs);
      set_arg_if_present (e, "qp-b", qs);
    } else {
      set_arg_if_present (e, "rc-mode", "constqp");
      set_arg_if_present (e, "qp-const", qs);
    }
  } else if (g_str_equal (name, "vp9") || g_str_equal (name, "vp8")) {
    gst_util_set_object_arg (G_OBJECT (e), "end-usage", "q");
    g_object_set (e, "cq-level", q, NULL);
    /* good quality, not the realtime default; multithreaded rows */
    g_object_set (e, "deadline", (gint64) 1000000, "cpu-used", 4, NULL);
    set_arg_if_present (e, "row-mt", "true");
  }
  *encoder = e;
  if (info->parser) {
    *parser = remaster_make (info->parser, NULL, error);
    if (!*parser) {
      gst_clear_object (encoder);
      return FALSE;
    }
  }
  return TRUE;
}

gchar *
remaster_encoder_describe (const gchar * name, gint quality)
{
  const EncoderInfo *info = find_info (name);
  if (!info)
    return g_strdup_printf ("%s (defaults)", name);
  const gchar *factory = installed_factory (info);
  if (!info->quality_name)
    return g_strdup_printf ("%s (%s, lossless)", name,
        factory ? factory : info->factories[0]);
  return g_strdup_printf ("%s (%s, %s %d)", name,
      factory ? factory : info->factories[0], info->quality_name,
      quality >= 0 ? quality : info->quality_default);
}
