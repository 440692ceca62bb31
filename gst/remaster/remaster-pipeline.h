/* remaster-pipeline.h — small GStreamer helpers shared by the probe, the
 * worker and the join: elements that may be missing, bus errors as
 * GErrors, the kind of an elementary stream. */
#ifndef REMASTER_PIPELINE_H
#define REMASTER_PIPELINE_H

#include <gst/gst.h>

G_BEGIN_DECLS

/* GST_DEBUG=ehat-remaster:5 traces every step. */
GST_DEBUG_CATEGORY_EXTERN (remaster_debug);
#define GST_CAT_DEFAULT remaster_debug
void remaster_debug_init (void);

typedef enum
{
  REMASTER_STREAM_VIDEO,
  REMASTER_STREAM_AUDIO,
  REMASTER_STREAM_SUBTITLE,
  REMASTER_STREAM_OTHER,
} RemasterStreamKind;

/* What kind of stream a demuxed/parsed pad carries (by its caps). */
RemasterStreamKind remaster_stream_kind (const GstCaps * caps);
RemasterStreamKind remaster_pad_stream_kind (GstPad * pad);

/* parsebin that stops at the demuxer: the streams come out as the
 * container stores them, with no parser in between (a parser may rewrite
 * packets, merge codec headers into them and flag them as headers; the
 * join copies streams untouched and the probe counts stored frames).  A
 * bare elementary stream still gets its parser, having no demuxer. */
GstElement *remaster_make_demuxbin (GError ** error);

/* The element that made the stream behind one of parsebin's (ghost) pads
 * (a new reference), or NULL. */
GstElement *remaster_pad_producer (GstPad * pad);

/* gst_element_factory_make() with an error that names the element and the
 * Debian package it usually comes from. */
GstElement *remaster_make (const gchar * factory, const gchar * name,
    GError ** error);

/* An ERROR message as a GError (REMASTER_ERROR_PIPELINE), naming the
 * element that posted it; `what` says which step failed. */
void remaster_error_from_message (GstMessage * msg, const gchar * what,
    GError ** error);

/* Pops messages until EOS (TRUE) or ERROR (FALSE, error set) or `timeout`
 * (returns TRUE with *eos = FALSE).  Warnings are ignored. */
gboolean remaster_bus_poll (GstBus * bus, GstClockTime timeout,
    gboolean * eos, const gchar * what, GError ** error);

/* Changes the state and waits for it; on failure collects the bus error. */
gboolean remaster_set_state_wait (GstElement * pipeline, GstState state,
    const gchar * what, GError ** error);

/* Same without waiting: for pipelines fed by an appsrc, which cannot
 * preroll before the caller pushes data. */
gboolean remaster_set_state (GstElement * pipeline, GstState state,
    const gchar * what, GError ** error);

/* PLAYING until EOS or ERROR, then NULL. */
gboolean remaster_run_to_eos (GstElement * pipeline, const gchar * what,
    GError ** error);

/* Links a new dynamic pad to a fresh fakesink that swallows it. */
gboolean remaster_link_to_fakesink (GstBin * bin, GstPad * pad);

G_END_DECLS

#endif
