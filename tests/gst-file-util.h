/* gst-file-util.h — helpers of the tests that make and read media files
 * (test-remaster, test-mkvpatch). */
#ifndef GST_FILE_UTIL_H
#define GST_FILE_UTIL_H

#include <gst/gst.h>

/* Plays `p` to its end; an error fails the test. */
static inline void
test_run_to_eos (GstElement * p)
{
  gst_element_set_state (p, GST_STATE_PLAYING);
  g_autoptr (GstBus) bus = gst_element_get_bus (p);
  GstMessage *msg = gst_bus_timed_pop_filtered (bus, GST_CLOCK_TIME_NONE,
      GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  g_assert_cmpint (GST_MESSAGE_TYPE (msg), ==, GST_MESSAGE_EOS);
  gst_message_unref (msg);
  gst_element_set_state (p, GST_STATE_NULL);
}

/* The caps reaching the fakesink named "s" at the end of pipeline `desc`
 * once it has prerolled. */
static inline GstCaps *
test_prerolled_caps (const gchar * desc)
{
  g_autoptr (GstElement) p = gst_parse_launch (desc, NULL);
  g_assert_nonnull (p);
  gst_element_set_state (p, GST_STATE_PAUSED);
  g_assert_cmpint (gst_element_get_state (p, NULL, NULL, GST_CLOCK_TIME_NONE),
      ==, GST_STATE_CHANGE_SUCCESS);
  GstElement *sink = gst_bin_get_by_name (GST_BIN (p), "s");
  GstPad *pad = gst_element_get_static_pad (sink, "sink");
  GstCaps *caps = gst_pad_get_current_caps (pad);
  gst_object_unref (pad);
  gst_object_unref (sink);
  gst_element_set_state (p, GST_STATE_NULL);
  return caps;
}

/* The caps of the first stream matroskademux exposes in `path` (the video
 * in these tests), from the container's headers. */
static inline GstCaps *
test_demuxed_caps (const gchar * path)
{
  g_autofree gchar *desc = g_strdup_printf ("filesrc location=\"%s\" ! "
      "matroskademux ! fakesink name=s", path);

  return test_prerolled_caps (desc);
}

#endif
