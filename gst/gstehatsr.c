/* gst-ehatsr — ehatsr: HAT / EHAT video super-resolution element.
 *
 * Glue only: caps negotiation (output = input × the model's scale), frame
 * mapping, properties and messages.  Colour conversion, tiling and the
 * network live in ehat-core.
 */
/**
 * SECTION:element-ehatsr
 * @title: ehatsr
 *
 * Upscales video by 2, 3 or 4 (the model's scale) with a HAT or EHAT
 * super-resolution transformer.  Frames are converted to float RGB,
 * processed in overlapping tiles that are blended without seams, and
 * converted back to the input format; alpha is upscaled bilinearly.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 videotestsrc num-buffers=10 ! video/x-raw,width=320,height=240 ! \
 *     ehatsr model=ehat-fast-x2.safetensors ! videoconvert ! autovideosink
 * ]|
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstehatsr.h"
#include "ehat-resample.h"

#include <string.h>

GST_DEBUG_CATEGORY_STATIC (gst_ehat_sr_debug);
#define GST_CAT_DEFAULT gst_ehat_sr_debug

#ifndef EHATSR_DEFAULT_MODEL
#define EHATSR_DEFAULT_MODEL "/usr/local/share/ehatsr/models/ehat-fast-x2.safetensors"
#endif

#define DEFAULT_BACKEND GST_EHAT_SR_BACKEND_AUTO
#define DEFAULT_DEVICE_ID 0
#define DEFAULT_PRECISION GST_EHAT_SR_PRECISION_AUTO
#define DEFAULT_TILE_SIZE 0
#define DEFAULT_TILE_OVERLAP 16
#define DEFAULT_ENSEMBLE 1
#define DEFAULT_QOS_FALLBACK GST_EHAT_SR_QOS_FALLBACK_DROP
#define DEFAULT_POST_MESSAGES FALSE

enum
{
  PROP_0,
  PROP_MODEL,
  PROP_BACKEND,
  PROP_DEVICE_ID,
  PROP_PRECISION,
  PROP_TILE_SIZE,
  PROP_TILE_HEIGHT,
  PROP_TILE_OVERLAP,
  PROP_SCALE,
  PROP_STATS,
  PROP_QOS_FALLBACK,
  PROP_POST_MESSAGES,
  PROP_ENSEMBLE,
};

/* Formats of ours and GStreamer's, in the same order. */
static const struct
{
  GstVideoFormat gst;
  EhatPixelFormat ehat;
} format_map[] = {
  {GST_VIDEO_FORMAT_RGB, EHAT_PIXEL_RGB},
  {GST_VIDEO_FORMAT_BGR, EHAT_PIXEL_BGR},
  {GST_VIDEO_FORMAT_RGBA, EHAT_PIXEL_RGBA},
  {GST_VIDEO_FORMAT_BGRA, EHAT_PIXEL_BGRA},
  {GST_VIDEO_FORMAT_RGBx, EHAT_PIXEL_RGBx},
  {GST_VIDEO_FORMAT_BGRx, EHAT_PIXEL_BGRx},
  {GST_VIDEO_FORMAT_xRGB, EHAT_PIXEL_xRGB},
  {GST_VIDEO_FORMAT_xBGR, EHAT_PIXEL_xBGR},
  {GST_VIDEO_FORMAT_ARGB, EHAT_PIXEL_ARGB},
  {GST_VIDEO_FORMAT_ABGR, EHAT_PIXEL_ABGR},
  {GST_VIDEO_FORMAT_I420, EHAT_PIXEL_I420},
  {GST_VIDEO_FORMAT_YV12, EHAT_PIXEL_YV12},
  {GST_VIDEO_FORMAT_NV12, EHAT_PIXEL_NV12},
  {GST_VIDEO_FORMAT_NV21, EHAT_PIXEL_NV21},
  {GST_VIDEO_FORMAT_Y444, EHAT_PIXEL_Y444},
  {GST_VIDEO_FORMAT_GRAY8, EHAT_PIXEL_GRAY8},
  {GST_VIDEO_FORMAT_I420_10LE, EHAT_PIXEL_I420_10LE},
  {GST_VIDEO_FORMAT_P010_10LE, EHAT_PIXEL_P010_10LE},
  {GST_VIDEO_FORMAT_Y42B, EHAT_PIXEL_Y42B},
  {GST_VIDEO_FORMAT_NV16, EHAT_PIXEL_NV16},
  {GST_VIDEO_FORMAT_I422_10LE, EHAT_PIXEL_I422_10LE},
  {GST_VIDEO_FORMAT_I422_12LE, EHAT_PIXEL_I422_12LE},
  {GST_VIDEO_FORMAT_Y444_10LE, EHAT_PIXEL_Y444_10LE},
  {GST_VIDEO_FORMAT_Y444_12LE, EHAT_PIXEL_Y444_12LE},
  {GST_VIDEO_FORMAT_Y444_16LE, EHAT_PIXEL_Y444_16LE},
  {GST_VIDEO_FORMAT_I420_12LE, EHAT_PIXEL_I420_12LE},
  {GST_VIDEO_FORMAT_P012_LE, EHAT_PIXEL_P012_LE},
  {GST_VIDEO_FORMAT_P016_LE, EHAT_PIXEL_P016_LE},
  {GST_VIDEO_FORMAT_GRAY16_LE, EHAT_PIXEL_GRAY16_LE},
  {GST_VIDEO_FORMAT_GBR, EHAT_PIXEL_GBR},
  {GST_VIDEO_FORMAT_GBR_10LE, EHAT_PIXEL_GBR_10LE},
  {GST_VIDEO_FORMAT_GBR_12LE, EHAT_PIXEL_GBR_12LE},
  {GST_VIDEO_FORMAT_YUY2, EHAT_PIXEL_YUY2},
  {GST_VIDEO_FORMAT_UYVY, EHAT_PIXEL_UYVY},
  {GST_VIDEO_FORMAT_YVYU, EHAT_PIXEL_YVYU},
  {GST_VIDEO_FORMAT_Y210, EHAT_PIXEL_Y210},
  {GST_VIDEO_FORMAT_Y212_LE, EHAT_PIXEL_Y212_LE},
  {GST_VIDEO_FORMAT_AYUV, EHAT_PIXEL_AYUV},
  {GST_VIDEO_FORMAT_VUYA, EHAT_PIXEL_VUYA},
  {GST_VIDEO_FORMAT_AYUV64, EHAT_PIXEL_AYUV64},
  {GST_VIDEO_FORMAT_RGBA64_LE, EHAT_PIXEL_RGBA64_LE},
  {GST_VIDEO_FORMAT_BGRA64_LE, EHAT_PIXEL_BGRA64_LE},
  {GST_VIDEO_FORMAT_ARGB64_LE, EHAT_PIXEL_ARGB64_LE},
  {GST_VIDEO_FORMAT_ABGR64_LE, EHAT_PIXEL_ABGR64_LE},
  {GST_VIDEO_FORMAT_ARGB64, EHAT_PIXEL_ARGB64},
  {GST_VIDEO_FORMAT_A420, EHAT_PIXEL_A420},
  {GST_VIDEO_FORMAT_A420_10LE, EHAT_PIXEL_A420_10LE},
  {GST_VIDEO_FORMAT_A422_10LE, EHAT_PIXEL_A422_10LE},
  {GST_VIDEO_FORMAT_A444_10LE, EHAT_PIXEL_A444_10LE},
  {GST_VIDEO_FORMAT_GBRA, EHAT_PIXEL_GBRA},
  {GST_VIDEO_FORMAT_GBRA_10LE, EHAT_PIXEL_GBRA_10LE},
  {GST_VIDEO_FORMAT_GBRA_12LE, EHAT_PIXEL_GBRA_12LE},
  {GST_VIDEO_FORMAT_v210, EHAT_PIXEL_v210},
  {GST_VIDEO_FORMAT_NV24, EHAT_PIXEL_NV24},
  {GST_VIDEO_FORMAT_NV61, EHAT_PIXEL_NV61},
  {GST_VIDEO_FORMAT_VYUY, EHAT_PIXEL_VYUY},
  {GST_VIDEO_FORMAT_Y410, EHAT_PIXEL_Y410},
  {GST_VIDEO_FORMAT_Y412_LE, EHAT_PIXEL_Y412_LE},
};

/* every libehat format, by the name GStreamer gives it */
G_STATIC_ASSERT (G_N_ELEMENTS (format_map) == EHAT_PIXEL_N_FORMATS);
/* GStreamer's AYUV64 and ARGB64 are native-endian, libehat's 16-bit
 * samples little-endian: a big-endian host needs another map */
G_STATIC_ASSERT (G_BYTE_ORDER == G_LITTLE_ENDIAN);

#define EHATSR_FORMATS "{ RGB, BGR, RGBA, BGRA, RGBx, BGRx, xRGB, xBGR, " \
    "ARGB, ABGR, I420, YV12, NV12, NV21, Y444, GRAY8, I420_10LE, " \
    "P010_10LE, Y42B, NV16, I422_10LE, I422_12LE, Y444_10LE, Y444_12LE, " \
    "Y444_16LE, I420_12LE, P012_LE, P016_LE, GRAY16_LE, GBR, GBR_10LE, " \
    "GBR_12LE, YUY2, UYVY, YVYU, Y210, Y212_LE, AYUV, VUYA, AYUV64, " \
    "RGBA64_LE, BGRA64_LE, ARGB64_LE, ABGR64_LE, ARGB64, A420, A420_10LE, " \
    "A422_10LE, A444_10LE, GBRA, GBRA_10LE, GBRA_12LE, v210, NV24, NV61, " \
    "VYUY, Y410, Y412_LE }"

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE (EHATSR_FORMATS)));

static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE (EHATSR_FORMATS)));

GType
gst_ehat_sr_backend_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {GST_EHAT_SR_BACKEND_AUTO, "CUDA when a GPU is usable, else CPU", "auto"},
    {GST_EHAT_SR_BACKEND_CUDA, "CUDA (fails without a GPU)", "cuda"},
    {GST_EHAT_SR_BACKEND_CPU, "CPU", "cpu"},
    {0, NULL, NULL},
  };

  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstEhatSrBackend", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

GType
gst_ehat_sr_precision_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {GST_EHAT_SR_PRECISION_AUTO, "Fastest accurate precision of the backend "
          "(GPU: fp16, CPU: fp32)", "auto"},
    {GST_EHAT_SR_PRECISION_FP32, "32-bit float (the reference)", "fp32"},
    {GST_EHAT_SR_PRECISION_FP16, "16-bit float storage, fp32 accumulation "
          "(GPU)", "fp16"},
    {GST_EHAT_SR_PRECISION_BF16, "bfloat16 storage, fp32 accumulation (GPU; "
          "CPUs with AVX512-BF16)", "bf16"},
    {GST_EHAT_SR_PRECISION_TF32, "TensorFloat-32 matrix products, fp32 "
          "storage (GPU)", "tf32"},
    {0, NULL, NULL},
  };

  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstEhatSrPrecision", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

GType
gst_ehat_sr_qos_fallback_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {GST_EHAT_SR_QOS_FALLBACK_DROP, "Drop late frames", "drop"},
    {GST_EHAT_SR_QOS_FALLBACK_BICUBIC,
        "Upscale late frames by plain bicubic interpolation", "bicubic"},
    {0, NULL, NULL},
  };

  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstEhatSrQosFallback", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define gst_ehat_sr_parent_class parent_class
G_DEFINE_TYPE (GstEhatSr, gst_ehat_sr, GST_TYPE_VIDEO_FILTER);
GST_ELEMENT_REGISTER_DEFINE_WITH_CODE (ehatsr, "ehatsr", GST_RANK_NONE,
    GST_TYPE_EHAT_SR,
    GST_DEBUG_CATEGORY_INIT (gst_ehat_sr_debug, "ehatsr", 0,
        "HAT / EHAT super-resolution"));

/* The default model: $EHATSR_MODEL, else the installed one. */
static const gchar *
gst_ehat_sr_default_model (void)
{
  const gchar *env = g_getenv ("EHATSR_MODEL");

  return env && *env ? env : EHATSR_DEFAULT_MODEL;
}

static void
gst_ehat_sr_free_buffers (GstEhatSr * self)
{
  g_clear_pointer (&self->in_rgb, g_free);
  g_clear_pointer (&self->out_rgb, g_free);
  g_clear_pointer (&self->in_alpha, g_free);
  g_clear_pointer (&self->out_alpha, g_free);
}

/* Loads the model of the model property.  engine_lock held. */
static EhatModel *
gst_ehat_sr_load_model (GstEhatSr * self, gchar ** path_out, GError ** error)
{
  EhatModel *model;
  gchar *path;

  GST_OBJECT_LOCK (self);
  path = g_strdup (self->model_path);
  GST_OBJECT_UNLOCK (self);

  if (!path || !*path) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_IO, "no model set");
    g_free (path);
    return NULL;
  }
  GST_DEBUG_OBJECT (self, "loading model %s", path);
  model = ehat_model_load (path, error);
  if (path_out)
    *path_out = path;
  else
    g_free (path);
  return model;
}

static void
gst_ehat_sr_post_model_error (GstEhatSr * self, const gchar * path,
    const GError * err)
{
  if (g_error_matches (err, EHAT_ERROR, EHAT_ERROR_IO))
    GST_ELEMENT_ERROR (self, RESOURCE, OPEN_READ,
        ("Could not open model \"%s\": %s", path ? path : "(none)",
            err->message), ("set the model property or EHATSR_MODEL"));
  else
    GST_ELEMENT_ERROR (self, RESOURCE, READ,
        ("Invalid model \"%s\": %s", path ? path : "(none)", err->message),
        (NULL));
}

/* Makes sure a model is loaded so that the scale is known (caps queries
 * may come before start()).  Failure is silent here: start() reports it. */
static gint
gst_ehat_sr_ensure_scale (GstEhatSr * self)
{
  gint scale = g_atomic_int_get (&self->scale);

  if (scale > 0)
    return scale;
  g_mutex_lock (&self->engine_lock);
  if (!self->model) {
    GError *err = NULL;

    self->model = gst_ehat_sr_load_model (self, NULL, &err);
    if (!self->model) {
      GST_DEBUG_OBJECT (self, "no model yet: %s", err->message);
      g_clear_error (&err);
    }
  }
  if (self->model)
    g_atomic_int_set (&self->scale,
        ehat_model_get_config (self->model)->upscale);
  scale = g_atomic_int_get (&self->scale);
  g_mutex_unlock (&self->engine_lock);
  return scale;
}

static EhatEngine *
gst_ehat_sr_create_engine (GstEhatSr * self, EhatModel * model,
    GError ** error)
{
  EhatEngineOptions opts = EHAT_ENGINE_OPTIONS_INIT;
  EhatEngine *engine;
  const gchar *reason;

  GST_OBJECT_LOCK (self);
  switch (self->backend) {
    case GST_EHAT_SR_BACKEND_CUDA:
      opts.backend = EHAT_BACKEND_CUDA;
      break;
    case GST_EHAT_SR_BACKEND_CPU:
      opts.backend = EHAT_BACKEND_CPU;
      break;
    default:
      opts.backend = EHAT_BACKEND_AUTO;
      break;
  }
  switch (self->precision) {
    case GST_EHAT_SR_PRECISION_FP32:
      opts.precision = EHAT_PRECISION_FP32;
      break;
    case GST_EHAT_SR_PRECISION_FP16:
      opts.precision = EHAT_PRECISION_FP16;
      break;
    case GST_EHAT_SR_PRECISION_BF16:
      opts.precision = EHAT_PRECISION_BF16;
      break;
    case GST_EHAT_SR_PRECISION_TF32:
      opts.precision = EHAT_PRECISION_TF32;
      break;
    default:
      opts.precision = EHAT_PRECISION_AUTO;
      break;
  }
  opts.device_id = self->device_id;
  GST_OBJECT_UNLOCK (self);

  engine = ehat_engine_new (model, &opts, error);
  if (!engine)
    return NULL;
  GST_INFO_OBJECT (self, "engine: %s", ehat_engine_describe (engine));
  reason = ehat_engine_get_fallback_reason (engine);
  if (reason && opts.backend == EHAT_BACKEND_AUTO)
    GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS,
        ("No usable GPU, running on the CPU (slow): %s", reason),
        ("%s", ehat_engine_describe (engine)));
  return engine;
}

/* Loads the model at path and creates its engine, without holding
 * engine_lock (a load takes a while and frames keep flowing meanwhile).
 * On failure posts nothing: the caller decides between error and warning. */
static gboolean
gst_ehat_sr_build_engine (GstEhatSr * self, const gchar * path,
    EhatModel ** model_out, EhatEngine ** engine_out, GError ** error)
{
  EhatModel *model;
  EhatEngine *engine;

  if (!path || !*path) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_IO, "no model set");
    return FALSE;
  }
  GST_DEBUG_OBJECT (self, "loading model %s", path);
  model = ehat_model_load (path, error);
  if (!model)
    return FALSE;
  engine = gst_ehat_sr_create_engine (self, model, error);
  if (!engine) {
    ehat_model_unref (model);
    return FALSE;
  }
  *model_out = model;
  *engine_out = engine;
  return TRUE;
}

static void
gst_ehat_sr_post_setup_error (GstEhatSr * self, const gchar * path,
    const GError * err)
{
  if (err->domain == EHAT_ERROR && (err->code == EHAT_ERROR_IO
          || err->code == EHAT_ERROR_FORMAT || err->code == EHAT_ERROR_CONFIG
          || err->code == EHAT_ERROR_TENSOR))
    gst_ehat_sr_post_model_error (self, path, err);
  else
    GST_ELEMENT_ERROR (self, LIBRARY, INIT,
        ("Could not create the inference engine for \"%s\": %s", path,
            err->message), (NULL));
}

/* Puts model and engine in place (taking them) and returns the previous
 * scale.  The old ones are freed after engine_lock is released. */
static gint
gst_ehat_sr_swap_engine (GstEhatSr * self, EhatModel * model,
    EhatEngine * engine)
{
  EhatModel *old_model;
  EhatEngine *old_engine;
  gint old_scale;

  g_mutex_lock (&self->engine_lock);
  old_model = self->model;
  old_engine = self->engine;
  old_scale = g_atomic_int_get (&self->scale);
  self->model = model;
  self->engine = engine;
  g_atomic_int_set (&self->scale, model ?
      ehat_model_get_config (model)->upscale : 0);
  g_mutex_unlock (&self->engine_lock);

  if (old_engine)
    ehat_engine_free (old_engine);
  if (old_model)
    ehat_model_unref (old_model);
  return old_scale;
}

static void
gst_ehat_sr_reset_qos (GstEhatSr * self)
{
  GST_OBJECT_LOCK (self);
  self->earliest_time = GST_CLOCK_TIME_NONE;
  self->proportion = 1.0;
  self->discont_pending = FALSE;
  GST_OBJECT_UNLOCK (self);
}

static gboolean
gst_ehat_sr_start (GstBaseTransform * trans)
{
  GstEhatSr *self = GST_EHAT_SR (trans);
  EhatModel *model = NULL;
  EhatEngine *engine = NULL;
  GError *err = NULL;
  gchar *path;

  g_mutex_lock (&self->setup_lock);
  GST_OBJECT_LOCK (self);
  path = g_strdup (self->model_path);
  GST_OBJECT_UNLOCK (self);
  /* (re)load: the file may have changed since a caps query loaded it */
  if (!gst_ehat_sr_build_engine (self, path, &model, &engine, &err)) {
    gst_ehat_sr_post_setup_error (self, path, err);
    g_clear_error (&err);
    g_free (path);
    g_mutex_unlock (&self->setup_lock);
    return FALSE;
  }
  g_free (path);
  gst_ehat_sr_swap_engine (self, model, engine);
  g_mutex_lock (&self->engine_lock);
  self->started = TRUE;
  g_mutex_unlock (&self->engine_lock);
  g_mutex_unlock (&self->setup_lock);

  gst_ehat_sr_reset_qos (self);
  GST_OBJECT_LOCK (self);
  self->frames = self->degraded = self->dropped = 0;
  self->total_ms = self->last_ms = 0.0;
  self->last_tiles = self->last_tile_width = self->last_tile_height = 0;
  GST_OBJECT_UNLOCK (self);
  return TRUE;
}

static gboolean
gst_ehat_sr_stop (GstBaseTransform * trans)
{
  GstEhatSr *self = GST_EHAT_SR (trans);

  g_mutex_lock (&self->setup_lock);
  g_mutex_lock (&self->engine_lock);
  self->started = FALSE;
  g_mutex_unlock (&self->engine_lock);
  gst_ehat_sr_swap_engine (self, NULL, NULL);
  g_mutex_unlock (&self->setup_lock);
  gst_ehat_sr_free_buffers (self);
  return TRUE;
}

/* Scales (mult) or unscales one width/height value: an int, a range or a
 * list.  FALSE when nothing of it maps (e.g. a width not divisible by the
 * scale on the way back). */
static gboolean
gst_ehat_sr_scale_value (const GValue * in, gint scale, gboolean mult,
    GValue * out)
{
  if (G_VALUE_HOLDS_INT (in)) {
    gint v = g_value_get_int (in);

    if (mult ? v > G_MAXINT / scale : v % scale != 0)
      return FALSE;
    g_value_init (out, G_TYPE_INT);
    g_value_set_int (out, mult ? v * scale : v / scale);
    return TRUE;
  }
  if (GST_VALUE_HOLDS_INT_RANGE (in)) {
    gint min = gst_value_get_int_range_min (in);
    gint max = gst_value_get_int_range_max (in);

    if (mult) {
      min = min > G_MAXINT / scale ? G_MAXINT : min * scale;
      max = max > G_MAXINT / scale ? G_MAXINT : max * scale;
    } else {
      min = (min + scale - 1) / scale;
      max = max / scale;
    }
    min = MAX (min, 1);
    if (min > max)
      return FALSE;
    if (min == max) {
      g_value_init (out, G_TYPE_INT);
      g_value_set_int (out, min);
    } else {
      g_value_init (out, GST_TYPE_INT_RANGE);
      gst_value_set_int_range (out, min, max);
    }
    return TRUE;
  }
  if (GST_VALUE_HOLDS_LIST (in)) {
    guint i, n = gst_value_list_get_size (in);

    g_value_init (out, GST_TYPE_LIST);
    for (i = 0; i < n; i++) {
      GValue v = G_VALUE_INIT;

      if (gst_ehat_sr_scale_value (gst_value_list_get_value (in, i), scale,
              mult, &v))
        gst_value_list_append_and_take_value (out, &v);
    }
    if (gst_value_list_get_size (out) == 0) {
      g_value_unset (out);
      return FALSE;
    }
    return TRUE;
  }
  return FALSE;
}

static GstCaps *
gst_ehat_sr_transform_caps (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps, GstCaps * filter)
{
  GstEhatSr *self = GST_EHAT_SR (trans);
  gint scale = gst_ehat_sr_ensure_scale (self);
  gboolean mult = direction == GST_PAD_SINK;
  GstCaps *ret;
  guint i;

  if (scale <= 0) {
    /* No loadable model: accept any size so that pipelines can be built;
     * start() then fails with an error message naming the model. */
    GST_DEBUG_OBJECT (self, "no model yet, any size");
    ret = gst_caps_copy (caps);
    for (i = 0; i < gst_caps_get_size (ret); i++)
      gst_structure_set (gst_caps_get_structure (ret, i),
          "width", GST_TYPE_INT_RANGE, 1, G_MAXINT,
          "height", GST_TYPE_INT_RANGE, 1, G_MAXINT, NULL);
    goto filter;
  }

  ret = gst_caps_new_empty ();
  for (i = 0; i < gst_caps_get_size (caps); i++) {
    GstStructure *s = gst_structure_copy (gst_caps_get_structure (caps, i));
    GstCapsFeatures *f = gst_caps_get_features (caps, i);
    const gchar *fields[] = { "width", "height" };
    gboolean ok = TRUE;
    guint k;

    for (k = 0; k < G_N_ELEMENTS (fields); k++) {
      const GValue *v = gst_structure_get_value (s, fields[k]);
      GValue nv = G_VALUE_INIT;

      if (!v) {
        /* unconstrained: any size that maps */
        if (mult)
          gst_structure_set (s, fields[k], GST_TYPE_INT_RANGE, scale,
              G_MAXINT, NULL);
        else
          gst_structure_set (s, fields[k], GST_TYPE_INT_RANGE, 1,
              G_MAXINT / scale, NULL);
        continue;
      }
      if (!gst_ehat_sr_scale_value (v, scale, mult, &nv)) {
        ok = FALSE;
        break;
      }
      gst_structure_take_value (s, fields[k], &nv);
    }
    if (!ok) {
      gst_structure_free (s);
      continue;
    }
    ret = gst_caps_merge_structure_full (ret, s,
        f ? gst_caps_features_copy (f) : NULL);
  }

filter:
  if (filter) {
    GstCaps *tmp = gst_caps_intersect_full (filter, ret,
        GST_CAPS_INTERSECT_FIRST);
    gst_caps_unref (ret);
    ret = tmp;
  }
  GST_DEBUG_OBJECT (self, "%s %" GST_PTR_FORMAT " → %" GST_PTR_FORMAT,
      mult ? "sink" : "src", caps, ret);
  return ret;
}

/* Fixates the other side to exactly this side × (or ÷) the scale, keeping
 * pixel-aspect-ratio and framerate. */
static GstCaps *
gst_ehat_sr_fixate_caps (GstBaseTransform * trans, GstPadDirection direction,
    GstCaps * caps, GstCaps * othercaps)
{
  GstEhatSr *self = GST_EHAT_SR (trans);
  gint scale = MAX (gst_ehat_sr_ensure_scale (self), 1);
  GstStructure *ins, *outs;
  gint w, h, n, d;

  othercaps = gst_caps_truncate (othercaps);
  othercaps = gst_caps_make_writable (othercaps);
  ins = gst_caps_get_structure (caps, 0);
  outs = gst_caps_get_structure (othercaps, 0);

  if (gst_structure_get_int (ins, "width", &w)
      && gst_structure_get_int (ins, "height", &h)) {
    if (direction == GST_PAD_SINK) {
      w = w > G_MAXINT / scale ? G_MAXINT : w * scale;
      h = h > G_MAXINT / scale ? G_MAXINT : h * scale;
    } else {
      w = MAX (w / scale, 1);
      h = MAX (h / scale, 1);
    }
    gst_structure_fixate_field_nearest_int (outs, "width", w);
    gst_structure_fixate_field_nearest_int (outs, "height", h);
  }
  if (gst_structure_get_fraction (ins, "pixel-aspect-ratio", &n, &d)
      && gst_structure_has_field (outs, "pixel-aspect-ratio"))
    gst_structure_fixate_field_nearest_fraction (outs, "pixel-aspect-ratio",
        n, d);
  if (gst_structure_get_fraction (ins, "framerate", &n, &d)
      && gst_structure_has_field (outs, "framerate"))
    gst_structure_fixate_field_nearest_fraction (outs, "framerate", n, d);

  othercaps = gst_caps_fixate (othercaps);
  GST_DEBUG_OBJECT (self, "fixated to %" GST_PTR_FORMAT, othercaps);
  return othercaps;
}

static gboolean
gst_ehat_sr_map_format (GstVideoFormat gst, EhatPixelFormat * out)
{
  guint i;

  for (i = 0; i < G_N_ELEMENTS (format_map); i++)
    if (format_map[i].gst == gst) {
      *out = format_map[i].ehat;
      return TRUE;
    }
  return FALSE;
}

static void
gst_ehat_sr_color_info (const GstVideoInfo * info, EhatPixelFormat format,
    EhatColorInfo * ci)
{
  const GstVideoColorimetry *c = &GST_VIDEO_INFO_COLORIMETRY (info);

  switch (c->matrix) {
    case GST_VIDEO_COLOR_MATRIX_BT601:
    case GST_VIDEO_COLOR_MATRIX_FCC:   /* within a percent of BT.601 */
      ci->matrix = EHAT_MATRIX_BT601;
      break;
    case GST_VIDEO_COLOR_MATRIX_BT2020:
      ci->matrix = EHAT_MATRIX_BT2020;
      break;
    case GST_VIDEO_COLOR_MATRIX_BT709:
    case GST_VIDEO_COLOR_MATRIX_SMPTE240M:     /* close to BT.709 */
      ci->matrix = EHAT_MATRIX_BT709;
      break;
    default:
      /* what GStreamer assumes for unknown YUV: SD → 601, HD → 709 */
      ci->matrix = GST_VIDEO_INFO_HEIGHT (info) >= 720 ?
          EHAT_MATRIX_BT709 : EHAT_MATRIX_BT601;
      break;
  }
  if (c->range == GST_VIDEO_COLOR_RANGE_0_255)
    ci->range = EHAT_RANGE_FULL;
  else if (c->range == GST_VIDEO_COLOR_RANGE_16_235)
    ci->range = EHAT_RANGE_LIMITED;
  else
    ci->range = format == EHAT_PIXEL_GRAY8 ? EHAT_RANGE_FULL :
        EHAT_RANGE_LIMITED;
  ci->siting = (GST_VIDEO_INFO_CHROMA_SITE (info) &
      GST_VIDEO_CHROMA_SITE_H_COSITED) ? EHAT_CHROMA_LEFT : EHAT_CHROMA_CENTER;
}

static gboolean
gst_ehat_sr_set_info (GstVideoFilter * filter, GstCaps * incaps,
    GstVideoInfo * in_info, GstCaps * outcaps, GstVideoInfo * out_info)
{
  GstEhatSr *self = GST_EHAT_SR (filter);
  gint scale = gst_ehat_sr_ensure_scale (self);
  gint w = GST_VIDEO_INFO_WIDTH (in_info), h = GST_VIDEO_INFO_HEIGHT (in_info);
  gint ow = GST_VIDEO_INFO_WIDTH (out_info);
  gint oh = GST_VIDEO_INFO_HEIGHT (out_info);

  if (scale <= 0 || ow != w * scale || oh != h * scale) {
    GST_ERROR_OBJECT (self, "output %dx%d is not %dx%d × %d", ow, oh, w, h,
        scale);
    return FALSE;
  }
  /* The network sees a whole frame: two fields woven into one would be
   * upscaled as a combed picture.  A "mixed" stream (DVD film, most of its
   * frames progressive) is taken, with a warning at its first interlaced
   * frame (transform_frame). */
  if (GST_VIDEO_INFO_INTERLACE_MODE (in_info)
      != GST_VIDEO_INTERLACE_MODE_PROGRESSIVE
      && GST_VIDEO_INFO_INTERLACE_MODE (in_info)
      != GST_VIDEO_INTERLACE_MODE_MIXED) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("Interlaced video is not supported"),
        ("interlace-mode=%s: deinterlace before ehatsr, e.g. "
            "'deinterlace fields=top ! ehatsr'",
            gst_video_interlace_mode_to_string (GST_VIDEO_INFO_INTERLACE_MODE
                (in_info))));
    return FALSE;
  }
  self->warned_interlaced = FALSE;
  if (!gst_ehat_sr_map_format (GST_VIDEO_INFO_FORMAT (in_info),
          &self->in_format)
      || !gst_ehat_sr_map_format (GST_VIDEO_INFO_FORMAT (out_info),
          &self->out_format)) {
    GST_ERROR_OBJECT (self, "unsupported format");
    return FALSE;
  }
  gst_ehat_sr_color_info (in_info, self->in_format, &self->in_color);
  gst_ehat_sr_color_info (out_info, self->out_format, &self->out_color);
  self->has_alpha = ehat_pixel_format_has_alpha (self->in_format)
      && ehat_pixel_format_has_alpha (self->out_format);

  /* The bicubic fallback's buffers, allocated now so that a late frame
   * never fails on memory, and so that caps too large for this host are
   * refused here.  (The network's own buffers are the engine's, kept
   * between frames; on the GPU path it needs none on the host.) */
  gst_ehat_sr_free_buffers (self);
  self->in_rgb = g_try_new (float, (gsize) 3 * w * h);
  self->out_rgb = g_try_new (float, (gsize) 3 * ow * oh);
  if (self->has_alpha) {
    self->in_alpha = g_try_new (float, (gsize) w * h);
    self->out_alpha = g_try_new (float, (gsize) ow * oh);
  }
  if (!self->in_rgb || !self->out_rgb || (self->has_alpha
          && (!self->in_alpha || !self->out_alpha))) {
    gst_ehat_sr_free_buffers (self);
    GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
        ("Could not allocate frame buffers for %dx%d", ow, oh), (NULL));
    return FALSE;
  }
  GST_INFO_OBJECT (self, "%dx%d → %dx%d %s, matrix %d range %d siting %d",
      w, h, ow, oh, gst_video_format_to_string (GST_VIDEO_INFO_FORMAT
          (in_info)), self->in_color.matrix, self->in_color.range,
      self->in_color.siting);
  return TRUE;
}

static void
gst_ehat_sr_wrap_frame (GstVideoFrame * vf, EhatPixelFormat format,
    EhatFrame * f)
{
  guint p;

  memset (f, 0, sizeof (*f));
  f->format = format;
  f->width = GST_VIDEO_FRAME_WIDTH (vf);
  f->height = GST_VIDEO_FRAME_HEIGHT (vf);
  for (p = 0; p < GST_VIDEO_FRAME_N_PLANES (vf) && p < EHAT_FRAME_MAX_PLANES;
      p++) {
    f->data[p] = GST_VIDEO_FRAME_PLANE_DATA (vf, p);
    f->stride[p] = GST_VIDEO_FRAME_PLANE_STRIDE (vf, p);
  }
}

/* QoS.  GstBaseTransform can only drop late frames, so the element does
 * QoS itself: QOS events are recorded here and not given to the base class
 * (which therefore never drops), and a frame is late by the base class's
 * test — running time ≤ the earliest time of the last QOS event
 * (timestamp + jitter).  Drop mode drops it before it is mapped
 * (submit_input_buffer), bicubic mode upscales it without the network
 * (transform_frame); both post a QoS message.  The `qos` property of the
 * base class switches all of it off. */
static gboolean
gst_ehat_sr_frame_is_late (GstEhatSr * self, GstBuffer * buf,
    GstEhatSrQosFallback mode, GstClockTime * running_time,
    GstClockTime * earliest, gdouble * proportion)
{
  GstBaseTransform *trans = GST_BASE_TRANSFORM (self);
  gboolean late;

  if (!gst_base_transform_is_qos_enabled (trans)
      || trans->segment.format != GST_FORMAT_TIME
      || !GST_BUFFER_PTS_IS_VALID (buf))
    return FALSE;
  *running_time = gst_segment_to_running_time (&trans->segment,
      GST_FORMAT_TIME, GST_BUFFER_PTS (buf));
  if (!GST_CLOCK_TIME_IS_VALID (*running_time))
    return FALSE;
  GST_OBJECT_LOCK (self);
  *earliest = self->earliest_time;
  *proportion = self->proportion;
  late = self->qos_fallback == mode && GST_CLOCK_TIME_IS_VALID (*earliest)
      && *running_time <= *earliest;
  GST_OBJECT_UNLOCK (self);
  return late;
}

/* A QoS message for a frame dropped (quality 1000000, as the base class
 * posts) or upscaled by the fallback (the processing changed for QoS
 * reasons; quality 0: no network at all). */
static void
gst_ehat_sr_post_qos (GstEhatSr * self, GstBuffer * buf,
    GstClockTime running_time, GstClockTime earliest, gdouble proportion,
    gint quality)
{
  GstBaseTransform *trans = GST_BASE_TRANSFORM (self);
  GstMessage *msg;
  guint64 processed, dropped;

  GST_OBJECT_LOCK (self);
  processed = self->frames + self->degraded;
  dropped = self->dropped;
  GST_OBJECT_UNLOCK (self);
  msg = gst_message_new_qos (GST_OBJECT_CAST (self), FALSE, running_time,
      gst_segment_to_stream_time (&trans->segment, GST_FORMAT_TIME,
          GST_BUFFER_PTS (buf)), GST_BUFFER_PTS (buf),
      GST_BUFFER_DURATION (buf));
  gst_message_set_qos_values (msg, GST_CLOCK_DIFF (running_time, earliest),
      proportion, quality);
  gst_message_set_qos_stats (msg, GST_FORMAT_BUFFERS, processed, dropped);
  gst_element_post_message (GST_ELEMENT_CAST (self), msg);
}

/* The frame by bicubic interpolation (late frames, a changed scale). */
static gboolean
gst_ehat_sr_bicubic_frame (GstEhatSr * self, const EhatFrame * fin,
    EhatFrame * fout, GError ** err)
{
  gint w = fin->width, h = fin->height, ow = fout->width, oh = fout->height;

  if (!ehat_frame_read (fin, &self->in_color, self->in_rgb, err))
    return FALSE;
  if (!ehat_resize_bicubic (self->in_rgb, 3, w, h, self->out_rgb, ow, oh)) {
    g_set_error (err, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY,
        "bicubic resample of %dx%d failed", w, h);
    return FALSE;
  }
  if (self->has_alpha) {
    if (!ehat_frame_read_alpha (fin, self->in_alpha, err))
      return FALSE;
    ehat_plane_resize_bilinear (self->in_alpha, w, h, self->out_alpha, ow,
        oh);
  }
  return ehat_frame_write (self->out_rgb, self->has_alpha ? self->out_alpha :
      NULL, &self->out_color, fout, err);
}

static GstFlowReturn
gst_ehat_sr_transform_frame (GstVideoFilter * filter, GstVideoFrame * in,
    GstVideoFrame * out)
{
  GstEhatSr *self = GST_EHAT_SR (filter);
  EhatTileOptions opt = EHAT_TILE_OPTIONS_INIT;
  EhatTileStats stats = { 0, };
  EhatFrame fin, fout;
  GError *err = NULL;
  GstClockTime running_time = GST_CLOCK_TIME_NONE, earliest = 0;
  gdouble proportion = 1.0;
  gboolean late, bicubic, post;
  const gchar *backend;
  guint64 index;
  gint64 t0;
  gdouble ms;
  gint w = GST_VIDEO_FRAME_WIDTH (in), h = GST_VIDEO_FRAME_HEIGHT (in);
  gint ow = GST_VIDEO_FRAME_WIDTH (out), oh = GST_VIDEO_FRAME_HEIGHT (out);

  GST_OBJECT_LOCK (self);
  opt.tile_size = self->tile_size;
  opt.tile_height = self->tile_height;
  opt.overlap = self->tile_overlap;
  opt.ensemble = self->ensemble;
  post = self->post_messages;
  GST_OBJECT_UNLOCK (self);
  late = gst_ehat_sr_frame_is_late (self, in->buffer,
      GST_EHAT_SR_QOS_FALLBACK_BICUBIC, &running_time, &earliest,
      &proportion);
  bicubic = late;

  if (GST_VIDEO_FRAME_IS_INTERLACED (in) && !self->warned_interlaced) {
    self->warned_interlaced = TRUE;
    GST_ELEMENT_WARNING (self, STREAM, FORMAT,
        ("Interlaced frames are upscaled as progressive ones"),
        ("frame at %" GST_TIME_FORMAT " of this mixed stream is interlaced: "
            "its fields are upscaled together (combing); deinterlace before "
            "ehatsr for these", GST_TIME_ARGS (GST_BUFFER_PTS (in->buffer))));
  }
  gst_ehat_sr_wrap_frame (in, self->in_format, &fin);
  gst_ehat_sr_wrap_frame (out, self->out_format, &fout);

  g_mutex_lock (&self->engine_lock);
  if (!self->engine) {
    g_mutex_unlock (&self->engine_lock);
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION, ("No model loaded"), (NULL));
    return GST_FLOW_NOT_NEGOTIATED;
  }
  if (ow != w * self->scale || oh != h * self->scale) {
    /* The model (and its scale) changed between negotiation and this
     * frame, whose output buffer has the old size.  Fill it by bicubic
     * (counted as degraded) rather than lose the frame, and renegotiate
     * for the next one. */
    GST_INFO_OBJECT (self, "scale changed, renegotiating");
    gst_base_transform_reconfigure_src (GST_BASE_TRANSFORM (self));
    bicubic = TRUE;
  }
  backend = ehat_engine_get_backend (self->engine) == EHAT_BACKEND_CUDA ?
      "cuda" : "cpu";

  t0 = g_get_monotonic_time ();
  if (bicubic) {
    GST_DEBUG_OBJECT (self, "frame at %" GST_TIME_FORMAT ": bicubic (%s)",
        GST_TIME_ARGS (running_time), late ? "late" : "scale changed");
    if (!gst_ehat_sr_bicubic_frame (self, &fin, &fout, &err))
      goto failed;
  } else if (!ehat_upscale_frame (self->engine, &fin, &self->in_color, &fout,
          &self->out_color, &opt, &stats, &err)) {
    /* the frame is read, upscaled and written by libehat: converted on
     * the GPU where the backend can, else on the host */
    goto failed;
  }
  g_mutex_unlock (&self->engine_lock);

  ms = (g_get_monotonic_time () - t0) / 1000.0;
  GST_LOG_OBJECT (self, "frame %dx%d: %.1f ms, %s, %d tiles of %dx%d", w, h,
      ms, bicubic ? "bicubic" : "network", stats.n_tiles, stats.tile_width,
      stats.tile_height);
  GST_OBJECT_LOCK (self);
  index = self->frames + self->degraded;
  if (bicubic) {
    self->degraded++;
  } else {
    self->frames++;
    self->total_ms += ms;
    self->last_ms = ms;
    self->last_tiles = stats.n_tiles;
    self->last_tile_width = stats.tile_width;
    self->last_tile_height = stats.tile_height;
  }
  GST_OBJECT_UNLOCK (self);

  if (stats.retries > 0)
    /* out of memory at the planned geometry: this frame went through with
     * smaller tiles, and the engine keeps planning below what failed */
    GST_ELEMENT_INFO (self, RESOURCE, NO_SPACE_LEFT,
        ("Out of %s memory: continuing with %dx%d tiles",
            g_strcmp0 (backend, "cuda") ? "host" : "GPU", stats.tile_width,
            stats.tile_height),
        ("%dx%d frame: %d retries, %d tiles of %dx%d; later frames are "
            "planned within the memory that took", w, h, stats.retries,
            stats.n_tiles, stats.tile_width, stats.tile_height));
  if (late)
    gst_ehat_sr_post_qos (self, in->buffer, running_time, earliest,
        proportion, 0);
  if (post) {
    GstBaseTransform *trans = GST_BASE_TRANSFORM (self);
    GstClockTime pts = GST_BUFFER_PTS (in->buffer);

    gst_element_post_message (GST_ELEMENT_CAST (self),
        gst_message_new_element (GST_OBJECT_CAST (self),
            gst_structure_new ("ehatsr-stats",
                "frame", G_TYPE_UINT64, index,
                "pts", G_TYPE_UINT64, pts,
                "running-time", G_TYPE_UINT64,
                trans->segment.format == GST_FORMAT_TIME ?
                gst_segment_to_running_time (&trans->segment,
                    GST_FORMAT_TIME, pts) : GST_CLOCK_TIME_NONE,
                "ms", G_TYPE_DOUBLE, ms,
                "method", G_TYPE_STRING, bicubic ? "bicubic" : "network",
                "tiles", G_TYPE_INT, bicubic ? 0 : stats.n_tiles,
                "tile-width", G_TYPE_INT, stats.tile_width,
                "tile-height", G_TYPE_INT, stats.tile_height,
                "backend", G_TYPE_STRING, backend, NULL)));
  }
  return GST_FLOW_OK;

failed:
  g_mutex_unlock (&self->engine_lock);
  if (g_error_matches (err, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT))
    GST_ELEMENT_ERROR (self, LIBRARY, SETTINGS,
        ("Invalid settings: %s", err->message), (NULL));
  else
    GST_ELEMENT_ERROR (self, STREAM, FAILED,
        ("Super-resolution failed: %s", err->message), (NULL));
  g_clear_error (&err);
  return GST_FLOW_ERROR;
}

static gboolean
gst_ehat_sr_src_event (GstBaseTransform * trans, GstEvent * event)
{
  GstEhatSr *self = GST_EHAT_SR (trans);

  if (GST_EVENT_TYPE (event) == GST_EVENT_QOS) {
    GstClockTimeDiff diff;
    GstClockTime timestamp;
    gdouble proportion;

    gst_event_parse_qos (event, NULL, &proportion, &diff, &timestamp);
    GST_OBJECT_LOCK (self);
    self->proportion = proportion;
    self->earliest_time = GST_CLOCK_TIME_IS_VALID (timestamp) ?
        (GstClockTime) MAX ((GstClockTimeDiff) timestamp + diff, 0) :
        GST_CLOCK_TIME_NONE;
    GST_OBJECT_UNLOCK (self);
    GST_DEBUG_OBJECT (self, "QoS: proportion %.3f, earliest %"
        GST_TIME_FORMAT, proportion, GST_TIME_ARGS (self->earliest_time));
    /* not to the base class (it would drop frames itself): upstream */
    return gst_pad_push_event (GST_BASE_TRANSFORM_SINK_PAD (trans), event);
  }
  return GST_BASE_TRANSFORM_CLASS (parent_class)->src_event (trans, event);
}

static gboolean
gst_ehat_sr_sink_event (GstBaseTransform * trans, GstEvent * event)
{
  GstEhatSr *self = GST_EHAT_SR (trans);

  if (GST_EVENT_TYPE (event) == GST_EVENT_FLUSH_STOP) {
    gst_ehat_sr_reset_qos (self);
    GST_OBJECT_LOCK (self);
    self->discont_pending = FALSE;
    GST_OBJECT_UNLOCK (self);
  }
  return GST_BASE_TRANSFORM_CLASS (parent_class)->sink_event (trans, event);
}

/* Drop mode: late frames are dropped here, before anything is mapped, and
 * the next frame sent is marked DISCONT (as GstBaseTransform does). */
static GstFlowReturn
gst_ehat_sr_submit_input_buffer (GstBaseTransform * trans,
    gboolean is_discont, GstBuffer * input)
{
  GstEhatSr *self = GST_EHAT_SR (trans);
  GstClockTime running_time, earliest;
  gdouble proportion;
  gboolean discont;

  if (gst_ehat_sr_frame_is_late (self, input, GST_EHAT_SR_QOS_FALLBACK_DROP,
          &running_time, &earliest, &proportion)) {
    GST_DEBUG_OBJECT (self, "dropping frame at %" GST_TIME_FORMAT
        ", late by %" GST_STIME_FORMAT, GST_TIME_ARGS (running_time),
        GST_STIME_ARGS (GST_CLOCK_DIFF (running_time, earliest)));
    GST_OBJECT_LOCK (self);
    self->dropped++;
    self->discont_pending = TRUE;
    GST_OBJECT_UNLOCK (self);
    gst_ehat_sr_post_qos (self, input, running_time, earliest, proportion,
        1000000);
    gst_buffer_unref (input);
    return GST_BASE_TRANSFORM_FLOW_DROPPED;
  }
  GST_OBJECT_LOCK (self);
  discont = self->discont_pending;
  self->discont_pending = FALSE;
  GST_OBJECT_UNLOCK (self);
  if (discont && !GST_BUFFER_FLAG_IS_SET (input, GST_BUFFER_FLAG_DISCONT)) {
    input = gst_buffer_make_writable (input);
    GST_BUFFER_FLAG_SET (input, GST_BUFFER_FLAG_DISCONT);
  }
  return GST_BASE_TRANSFORM_CLASS (parent_class)->submit_input_buffer (trans,
      is_discont, input);
}

/* Latency: nothing to add.  The element is synchronous — each output
 * buffer is pushed before the next input is accepted, no frame is held
 * back — so, like videoscale and videoconvert, it lets GstBaseTransform
 * forward the LATENCY query upstream unchanged.  Its processing time is
 * not latency in GStreamer's sense (that is the sinks'
 * processing-deadline); see docs/element.md, "Latency". */

/* Metas: copy those that do not depend on the frame size, scale those
 * that can be scaled (regions of interest), drop the rest. */
static gboolean
gst_ehat_sr_transform_meta (GstBaseTransform * trans, GstBuffer * outbuf,
    GstMeta * meta, GstBuffer * inbuf)
{
  GstVideoFilter *filter = GST_VIDEO_FILTER (trans);
  const GstMetaInfo *info = meta->info;
  const gchar *const *tags = gst_meta_api_type_get_tags (info->api);
  const gchar *const copyable[] = { GST_META_TAG_VIDEO_STR,
    GST_META_TAG_VIDEO_COLORSPACE_STR, GST_META_TAG_VIDEO_ORIENTATION_STR,
    NULL
  };
  gboolean has_size = FALSE;

  if (info->api == GST_VIDEO_META_API_TYPE)
    return FALSE;               /* the output buffer has its own */
  if (!tags)
    return TRUE;
  for (; *tags; tags++) {
    if (g_str_equal (*tags, GST_META_TAG_VIDEO_SIZE_STR))
      has_size = TRUE;
    else if (!g_strv_contains (copyable, *tags))
      return FALSE;
  }
  if (has_size) {
    GstVideoMetaTransform t = { &filter->in_info, &filter->out_info };

    if (!info->transform_func)
      return FALSE;
    info->transform_func (outbuf, meta, inbuf,
        gst_video_meta_transform_scale_get_quark (), &t);
    return FALSE;               /* done by transform_func */
  }
  return TRUE;
}

/* A new `model`.  Stopped: just remember it (loaded on demand).  Running:
 * load it beside the running one and swap; if it cannot be loaded, keep
 * the running model (and the property's old value, so that what the
 * property says is what runs and a restart does not fail) and post a
 * warning — see docs/element.md for why not an error. */
static void
gst_ehat_sr_set_model (GstEhatSr * self, const gchar * path)
{
  EhatModel *model = NULL;
  EhatEngine *engine = NULL;
  GError *err = NULL;
  gchar *new_path = g_strdup (path ? path : gst_ehat_sr_default_model ());
  gchar *old_path;
  gboolean started;
  gint old_scale, new_scale;

  g_mutex_lock (&self->setup_lock);
  GST_OBJECT_LOCK (self);
  old_path = self->model_path;
  self->model_path = g_strdup (new_path);
  GST_OBJECT_UNLOCK (self);

  g_mutex_lock (&self->engine_lock);
  started = self->started;
  if (!started) {
    /* loaded again (with the then current settings) on demand */
    g_clear_pointer (&self->model, ehat_model_unref);
    g_atomic_int_set (&self->scale, 0);
  }
  g_mutex_unlock (&self->engine_lock);

  if (!started)
    goto done;

  if (!gst_ehat_sr_build_engine (self, new_path, &model, &engine, &err)) {
    GST_ELEMENT_WARNING (self, RESOURCE, OPEN_READ,
        ("Could not switch to model \"%s\", keeping \"%s\": %s", new_path,
            old_path, err->message), (NULL));
    g_clear_error (&err);
    GST_OBJECT_LOCK (self);
    if (g_strcmp0 (self->model_path, new_path) == 0) {
      g_free (self->model_path);
      self->model_path = g_steal_pointer (&old_path);
    }
    GST_OBJECT_UNLOCK (self);
    goto done;
  }
  new_scale = ehat_model_get_config (model)->upscale;
  old_scale = gst_ehat_sr_swap_engine (self, model, engine);
  GST_INFO_OBJECT (self, "now running %s", new_path);
  if (new_scale != old_scale) {
    GST_INFO_OBJECT (self, "scale %d → %d, renegotiating", old_scale,
        new_scale);
    gst_base_transform_reconfigure_src (GST_BASE_TRANSFORM (self));
  }

done:
  g_mutex_unlock (&self->setup_lock);
  g_free (old_path);
  g_free (new_path);
}

static GstStructure *
gst_ehat_sr_get_stats (GstEhatSr * self)
{
  GstStructure *s;
  const gchar *backend = "none", *precision = "none";

  g_mutex_lock (&self->engine_lock);
  if (self->engine) {
    backend = ehat_engine_get_backend (self->engine) == EHAT_BACKEND_CUDA ?
        "cuda" : "cpu";
    /* what runs, which the precision property only asks for (auto, or
     * fp16 on a machine that fell back to the CPU, runs fp32 there) */
    precision = ehat_precision_name (ehat_engine_get_precision
        (self->engine));
  }
  g_mutex_unlock (&self->engine_lock);

  GST_OBJECT_LOCK (self);
  s = gst_structure_new ("ehatsr-stats",
      "frames", G_TYPE_UINT64, self->frames,
      "mean-ms", G_TYPE_DOUBLE,
      self->frames ? self->total_ms / self->frames : 0.0,
      "last-ms", G_TYPE_DOUBLE, self->last_ms,
      "tiles", G_TYPE_INT, self->last_tiles,
      "tile-width", G_TYPE_INT, self->last_tile_width,
      "tile-height", G_TYPE_INT, self->last_tile_height,
      "degraded", G_TYPE_UINT64, self->degraded,
      "dropped", G_TYPE_UINT64, self->dropped,
      "backend", G_TYPE_STRING, backend,
      "precision", G_TYPE_STRING, precision, NULL);
  GST_OBJECT_UNLOCK (self);
  return s;
}

static void
gst_ehat_sr_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstEhatSr *self = GST_EHAT_SR (object);

  switch (prop_id) {
    case PROP_MODEL:
      gst_ehat_sr_set_model (self, g_value_get_string (value));
      break;
    case PROP_BACKEND:
      GST_OBJECT_LOCK (self);
      self->backend = g_value_get_enum (value);
      GST_OBJECT_UNLOCK (self);
      break;
    case PROP_DEVICE_ID:
      GST_OBJECT_LOCK (self);
      self->device_id = g_value_get_int (value);
      GST_OBJECT_UNLOCK (self);
      break;
    case PROP_PRECISION:
      GST_OBJECT_LOCK (self);
      self->precision = g_value_get_enum (value);
      GST_OBJECT_UNLOCK (self);
      break;
    case PROP_TILE_SIZE:
      GST_OBJECT_LOCK (self);
      self->tile_size = g_value_get_int (value);
      GST_OBJECT_UNLOCK (self);
      break;
    case PROP_TILE_HEIGHT:
      GST_OBJECT_LOCK (self);
      self->tile_height = g_value_get_int (value);
      GST_OBJECT_UNLOCK (self);
      break;
    case PROP_TILE_OVERLAP:
      GST_OBJECT_LOCK (self);
      self->tile_overlap = g_value_get_int (value);
      GST_OBJECT_UNLOCK (self);
      break;
    case PROP_ENSEMBLE:{
      guint n = g_value_get_uint (value), p = 1;

      /* libehat takes 1, 2, 4 or 8 transforms (the flips first) */
      while (p * 2 <= n)
        p *= 2;
      if (p != n)
        GST_WARNING_OBJECT (self, "ensemble %u: using %u transforms", n, p);
      GST_OBJECT_LOCK (self);
      self->ensemble = p;
      GST_OBJECT_UNLOCK (self);
      break;
    }
    case PROP_QOS_FALLBACK:
      GST_OBJECT_LOCK (self);
      self->qos_fallback = g_value_get_enum (value);
      GST_OBJECT_UNLOCK (self);
      break;
    case PROP_POST_MESSAGES:
      GST_OBJECT_LOCK (self);
      self->post_messages = g_value_get_boolean (value);
      GST_OBJECT_UNLOCK (self);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
}

static void
gst_ehat_sr_get_property (GObject * object, guint prop_id, GValue * value,
    GParamSpec * pspec)
{
  GstEhatSr *self = GST_EHAT_SR (object);

  switch (prop_id) {
    case PROP_MODEL:
      GST_OBJECT_LOCK (self);
      g_value_set_string (value, self->model_path);
      GST_OBJECT_UNLOCK (self);
      break;
    case PROP_BACKEND:
      GST_OBJECT_LOCK (self);
      g_value_set_enum (value, self->backend);
      GST_OBJECT_UNLOCK (self);
      break;
    case PROP_DEVICE_ID:
      GST_OBJECT_LOCK (self);
      g_value_set_int (value, self->device_id);
      GST_OBJECT_UNLOCK (self);
      break;
    case PROP_PRECISION:
      GST_OBJECT_LOCK (self);
      g_value_set_enum (value, self->precision);
      GST_OBJECT_UNLOCK (self);
      break;
    case PROP_TILE_SIZE:
      GST_OBJECT_LOCK (self);
      g_value_set_int (value, self->tile_size);
      GST_OBJECT_UNLOCK (self);
      break;
    case PROP_TILE_HEIGHT:
      GST_OBJECT_LOCK (self);
      g_value_set_int (value, self->tile_height);
      GST_OBJECT_UNLOCK (self);
      break;
    case PROP_ENSEMBLE:
      GST_OBJECT_LOCK (self);
      g_value_set_uint (value, self->ensemble);
      GST_OBJECT_UNLOCK (self);
      break;
    case PROP_TILE_OVERLAP:
      GST_OBJECT_LOCK (self);
      g_value_set_int (value, self->tile_overlap);
      GST_OBJECT_UNLOCK (self);
      break;
    case PROP_SCALE:
      g_value_set_int (value, g_atomic_int_get (&self->scale));
      break;
    case PROP_QOS_FALLBACK:
      GST_OBJECT_LOCK (self);
      g_value_set_enum (value, self->qos_fallback);
      GST_OBJECT_UNLOCK (self);
      break;
    case PROP_POST_MESSAGES:
      GST_OBJECT_LOCK (self);
      g_value_set_boolean (value, self->post_messages);
      GST_OBJECT_UNLOCK (self);
      break;
    case PROP_STATS:
      g_value_take_boxed (value, gst_ehat_sr_get_stats (self));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
}

static void
gst_ehat_sr_finalize (GObject * object)
{
  GstEhatSr *self = GST_EHAT_SR (object);

  g_clear_pointer (&self->engine, ehat_engine_free);
  g_clear_pointer (&self->model, ehat_model_unref);
  gst_ehat_sr_free_buffers (self);
  g_free (self->model_path);
  g_mutex_clear (&self->engine_lock);
  g_mutex_clear (&self->setup_lock);
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static void
gst_ehat_sr_class_init (GstEhatSrClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS (klass);
  GstVideoFilterClass *filter_class = GST_VIDEO_FILTER_CLASS (klass);

  gobject_class->set_property = gst_ehat_sr_set_property;
  gobject_class->get_property = gst_ehat_sr_get_property;
  gobject_class->finalize = gst_ehat_sr_finalize;

  g_object_class_install_property (gobject_class, PROP_MODEL,
      g_param_spec_string ("model", "Model",
          "Model file (safetensors); default: $EHATSR_MODEL, else the "
          "installed default model. Can be changed while playing: the new "
          "model is loaded beside the running one and swapped in (caps are "
          "renegotiated when the scale changes); if it cannot be loaded the "
          "running model stays and a warning is posted",
          gst_ehat_sr_default_model (),
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_BACKEND,
      g_param_spec_enum ("backend", "Backend", "Inference backend",
          GST_TYPE_EHAT_SR_BACKEND, DEFAULT_BACKEND,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_DEVICE_ID,
      g_param_spec_int ("device-id", "Device ID",
          "CUDA device index (backend cuda or auto)",
          0, 1023, DEFAULT_DEVICE_ID,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_PRECISION,
      g_param_spec_enum ("precision", "Precision", "Arithmetic precision",
          GST_TYPE_EHAT_SR_PRECISION, DEFAULT_PRECISION,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_TILE_SIZE,
      g_param_spec_int ("tile-size", "Tile size",
          "Tile edge in input pixels, rounded up to a multiple of the model's "
          "window size (0 = automatic: the whole frame when its workspace "
          "fits the budget, else the fewest tiles that fit and recompute "
          "little overlap; the budget is about 90 % of the GPU's free "
          "memory on CUDA, min(MemAvailable/4, 2 GiB) on the CPU, taken "
          "at the first frame; $EHAT_MEMORY_BUDGET_MB overrides it; after "
          "an out of memory, tiles stay within what fitted)",
          0, 8192, DEFAULT_TILE_SIZE,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_TILE_HEIGHT,
      g_param_spec_int ("tile-height", "Tile height",
          "Tile height in input pixels when tiles are not square (0 = "
          "tile-size; ignored while tile-size is 0), rounded up like it. "
          "Setting tile-size and tile-height to an element's stats "
          "tile-width and tile-height repeats its automatic geometry: "
          "ehat-remaster does so to give every segment the same tiles",
          0, 8192, DEFAULT_TILE_SIZE,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_TILE_OVERLAP,
      g_param_spec_int ("tile-overlap", "Tile overlap",
          "Minimum overlap of neighbouring tiles in input pixels (at most "
          "the tile size minus the window size); outputs are cross-faded "
          "over half of it", 0, 1024, DEFAULT_TILE_OVERLAP,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_ENSEMBLE,
      g_param_spec_uint ("ensemble", "Self-ensemble",
          "Average the network over this many flipped and transposed "
          "copies of every tile, each mapped back (1 = off; 2: and its "
          "mirror image, 4: every flip, 8: the transposes too; other values "
          "round down): better quality for offline work at that many times "
          "the computation", 1, 8, DEFAULT_ENSEMBLE,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_QOS_FALLBACK,
      g_param_spec_enum ("qos-fallback", "QoS fallback",
          "What to do with a frame that is already late (needs qos=true): "
          "drop it, or upscale it by plain bicubic interpolation to keep "
          "every frame", GST_TYPE_EHAT_SR_QOS_FALLBACK, DEFAULT_QOS_FALLBACK,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_POST_MESSAGES,
      g_param_spec_boolean ("post-messages", "Post messages",
          "Post an element message \"ehatsr-stats\" for every frame "
          "(frame, pts, running-time, ms, method, tiles, tile-width, "
          "tile-height, backend)", DEFAULT_POST_MESSAGES,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_SCALE,
      g_param_spec_int ("scale", "Scale",
          "Upscaling factor of the loaded model (0 = none loaded yet)",
          0, 4, 0, G_PARAM_READABLE | G_PARAM_STATIC_STRINGS));
  g_object_class_install_property (gobject_class, PROP_STATS,
      g_param_spec_boxed ("stats", "Statistics",
          "Since the last start: frames (guint64, upscaled by the network), "
          "mean-ms and last-ms (gdouble, per network frame), tiles, "
          "tile-width and tile-height (gint, of the last network frame: "
          "their count and input size), degraded (guint64, upscaled by the "
          "bicubic QoS fallback), dropped (guint64, dropped for QoS), "
          "backend (string: cpu, cuda or none)", GST_TYPE_STRUCTURE,
          G_PARAM_READABLE | G_PARAM_STATIC_STRINGS));

  gst_element_class_set_static_metadata (element_class,
      "HAT/EHAT super-resolution", "Filter/Effect/Converter/Video/Scaler",
      "Upscales video with a HAT or EHAT super-resolution transformer",
      "gst-ehatsr developers");
  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);

  trans_class->start = GST_DEBUG_FUNCPTR (gst_ehat_sr_start);
  trans_class->stop = GST_DEBUG_FUNCPTR (gst_ehat_sr_stop);
  trans_class->transform_caps =
      GST_DEBUG_FUNCPTR (gst_ehat_sr_transform_caps);
  trans_class->fixate_caps = GST_DEBUG_FUNCPTR (gst_ehat_sr_fixate_caps);
  trans_class->transform_meta =
      GST_DEBUG_FUNCPTR (gst_ehat_sr_transform_meta);
  trans_class->src_event = GST_DEBUG_FUNCPTR (gst_ehat_sr_src_event);
  trans_class->sink_event = GST_DEBUG_FUNCPTR (gst_ehat_sr_sink_event);
  trans_class->submit_input_buffer =
      GST_DEBUG_FUNCPTR (gst_ehat_sr_submit_input_buffer);
  trans_class->passthrough_on_same_caps = FALSE;
  filter_class->set_info = GST_DEBUG_FUNCPTR (gst_ehat_sr_set_info);
  filter_class->transform_frame =
      GST_DEBUG_FUNCPTR (gst_ehat_sr_transform_frame);

  gst_type_mark_as_plugin_api (GST_TYPE_EHAT_SR_BACKEND, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_EHAT_SR_PRECISION, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_EHAT_SR_QOS_FALLBACK, 0);
}

static void
gst_ehat_sr_init (GstEhatSr * self)
{
  g_mutex_init (&self->engine_lock);
  g_mutex_init (&self->setup_lock);
  self->model_path = g_strdup (gst_ehat_sr_default_model ());
  self->backend = DEFAULT_BACKEND;
  self->device_id = DEFAULT_DEVICE_ID;
  self->precision = DEFAULT_PRECISION;
  self->tile_size = DEFAULT_TILE_SIZE;
  self->tile_height = DEFAULT_TILE_SIZE;
  self->tile_overlap = DEFAULT_TILE_OVERLAP;
  self->ensemble = DEFAULT_ENSEMBLE;
  self->qos_fallback = DEFAULT_QOS_FALLBACK;
  self->post_messages = DEFAULT_POST_MESSAGES;
  self->earliest_time = GST_CLOCK_TIME_NONE;
  self->proportion = 1.0;
  /* late frames are worth skipping: a network pass is expensive */
  gst_base_transform_set_qos_enabled (GST_BASE_TRANSFORM (self), TRUE);
}
