/* remaster-encoder.h — the --encoder choices and what --quality means for
 * each.  Names not in the table are taken as a GStreamer encoder factory
 * (e.g. --encoder av1enc), used with its defaults. */
#ifndef REMASTER_ENCODER_H
#define REMASTER_ENCODER_H

#include <gst/gst.h>

G_BEGIN_DECLS

/* The default when --encoder is not given: x264 where it is installed,
 * else vp9, else ffv1. */
const gchar *remaster_encoder_default (void);

/* Checks that `name` is usable here and that `quality` (-1: default) is in
 * its range. */
gboolean remaster_encoder_check (const gchar * name, gint quality,
    GError ** error);

/* The encoder element, plus the parser the muxer may need after it
 * (*parser may be NULL).  device_id: the GPU, for NVENC encoders. */
gboolean remaster_encoder_make (const gchar * name, gint quality,
    gint device_id, GstElement ** encoder, GstElement ** parser,
    GError ** error);

/* A human description for the report, e.g. "x264 (x264enc, crf 21)". */
gchar *remaster_encoder_describe (const gchar * name, gint quality);

/* TRUE when the codec only ever makes keyframes (ffv1): lossless
 * comparisons in tests use it. */
gboolean remaster_encoder_is_lossless (const gchar * name);

G_END_DECLS

#endif
