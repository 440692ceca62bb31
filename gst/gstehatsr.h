/* gst-ehatsr — ehatsr: HAT / EHAT video super-resolution element. */
#ifndef __GST_EHAT_SR_H__
#define __GST_EHAT_SR_H__

#include <gst/gst.h>
#include <gst/video/video.h>
#include <gst/video/gstvideofilter.h>

#include "ehat.h"
#include "ehat-frame.h"
#include "ehat-tiler.h"

G_BEGIN_DECLS

#define GST_TYPE_EHAT_SR (gst_ehat_sr_get_type ())
G_DECLARE_FINAL_TYPE (GstEhatSr, gst_ehat_sr, GST, EHAT_SR, GstVideoFilter)

typedef enum
{
  GST_EHAT_SR_BACKEND_AUTO,
  GST_EHAT_SR_BACKEND_CUDA,
  GST_EHAT_SR_BACKEND_CPU,
} GstEhatSrBackend;

typedef enum
{
  GST_EHAT_SR_PRECISION_AUTO,
  GST_EHAT_SR_PRECISION_FP32,
  GST_EHAT_SR_PRECISION_FP16,
  GST_EHAT_SR_PRECISION_BF16,
  GST_EHAT_SR_PRECISION_TF32,   /* appended: the values above are ABI */
} GstEhatSrPrecision;

typedef enum
{
  GST_EHAT_SR_QOS_FALLBACK_DROP,
  GST_EHAT_SR_QOS_FALLBACK_BICUBIC,
} GstEhatSrQosFallback;

#define GST_TYPE_EHAT_SR_BACKEND (gst_ehat_sr_backend_get_type ())
GType gst_ehat_sr_backend_get_type (void);
#define GST_TYPE_EHAT_SR_PRECISION (gst_ehat_sr_precision_get_type ())
GType gst_ehat_sr_precision_get_type (void);
#define GST_TYPE_EHAT_SR_QOS_FALLBACK (gst_ehat_sr_qos_fallback_get_type ())
GType gst_ehat_sr_qos_fallback_get_type (void);

struct _GstEhatSr
{
  GstVideoFilter parent;

  /* properties, under the object lock */
  gchar *model_path;
  GstEhatSrBackend backend;
  gint device_id;
  GstEhatSrPrecision precision;
  gint tile_size;
  gint tile_height;             /* 0: tile_size */
  gint tile_overlap;
  guint ensemble;               /* 1, 2, 4 or 8 */
  GstEhatSrQosFallback qos_fallback;
  gboolean post_messages;

  /* serialises model (re)loads: start, stop and a change of `model` */
  GMutex setup_lock;

  /* QoS as the last QOS event said (object lock); the element does QoS
   * itself (see gst_ehat_sr_frame_is_late) */
  GstClockTime earliest_time;
  gdouble proportion;
  gboolean discont_pending;     /* a frame was dropped: mark the next */

  /* the model and the engine, under engine_lock (taken before the object
   * lock when both are needed) */
  GMutex engine_lock;
  EhatModel *model;
  EhatEngine *engine;
  gint scale;                   /* atomic: the loaded model's, or 0 */
  gboolean started;

  /* negotiated conversion, streaming thread only */
  EhatColorInfo in_color;
  EhatColorInfo out_color;
  EhatPixelFormat in_format;
  EhatPixelFormat out_format;
  gboolean has_alpha;
  gboolean warned_interlaced;   /* once per stream (mixed interlace mode) */
  float *in_rgb, *out_rgb, *in_alpha, *out_alpha;

  /* statistics, under the object lock */
  guint64 frames;               /* by the network */
  guint64 degraded;             /* by the bicubic QoS fallback */
  guint64 dropped;              /* dropped for QoS */
  gdouble total_ms;
  gdouble last_ms;
  gint last_tiles;
  gint last_tile_width;         /* geometry of the last network frame */
  gint last_tile_height;
};

GST_ELEMENT_REGISTER_DECLARE (ehatsr);

G_END_DECLS

#endif /* __GST_EHAT_SR_H__ */
