/* Fault tests (issue 9, item 4): the ehatsr element and libehat under
 * faults.  Every case has a defined outcome — an error message, a warning
 * and recovery, or plain recovery — no crash, and no frame lost silently:
 * frames pushed with GST_FLOW_OK = frames received + drops reported on the
 * bus (QoS messages); a push refused with a flow error is seen by
 * upstream, so it is counted as refused, not lost.
 *
 * Allocation failures are injected with the private hook of
 * ehat-core/ehat-fault.h (consulted by the CPU backend's allocator).
 * docs/reliability.md has the table of faults and outcomes.
 *
 * Needs GST_PLUGIN_PATH to the built plugin and EHAT_GOLDEN_DIR. */
#include <gst/gst.h>
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/video/video.h>

#include "ehat.h"
#include "ehat-fault.h"
#include "ehat-tiler.h"

#include <glib/gstdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>

/* valgrind sets this in the environment of the programs it runs */
#define RUNNING_ON_VALGRIND_GUESS() (g_getenv ("LD_PRELOAD") \
    && strstr (g_getenv ("LD_PRELOAD"), "vgpreload") != NULL)

#define BACKEND_AUTO 0
#define BACKEND_CUDA 1
#define BACKEND_CPU 2
#define PRECISION_FP16 2        /* GstEhatSrPrecision */

static gchar *
golden (const char *name)
{
  const gchar *dir = g_getenv ("EHAT_GOLDEN_DIR");

  fail_unless (dir != NULL, "EHAT_GOLDEN_DIR not set");
  return g_build_filename (dir, name, "model.safetensors", NULL);
}

/* A private copy of a golden model, to delete or truncate. */
static gchar *
copy_model (const char *name)
{
  gchar *src = golden (name), *data, *tmp;
  gsize len;
  int fd;

  fail_unless (g_file_get_contents (src, &data, &len, NULL));
  fd = g_file_open_tmp ("ehat-fault-XXXXXX.safetensors", &tmp, NULL);
  fail_unless (fd >= 0);
  close (fd);
  fail_unless (g_file_set_contents (tmp, data, len, NULL));
  g_free (data);
  g_free (src);
  return tmp;
}

static gsize
file_size (const gchar * path)
{
  GStatBuf st;

  fail_unless (g_stat (path, &st) == 0);
  return st.st_size;
}

/* In place (same inode), as a half-finished download or a full disk. */
static void
truncate_to (const gchar * path, gsize len)
{
  fail_unless (truncate (path, len) == 0);
}

static GstHarness *
harness_with_model (const gchar * model, int backend)
{
  GstElement *e = gst_element_factory_make ("ehatsr", NULL);
  GstHarness *hr;

  fail_unless (e != NULL, "no ehatsr (GST_PLUGIN_PATH?)");
  g_object_set (e, "model", model, "backend", backend, NULL);
  hr = gst_harness_new_with_element (e, "sink", "src");
  gst_object_unref (e);
  return hr;
}

static gchar *
caps_str (const char *format, int w, int h)
{
  return g_strdup_printf ("video/x-raw,format=%s,width=%d,height=%d,"
      "framerate=25/1,pixel-aspect-ratio=1/1", format, w, h);
}

static GstBuffer *
make_frame (const char *format, int w, int h, guint8 fill, GstClockTime pts)
{
  gchar *cs = caps_str (format, w, h);
  GstCaps *caps = gst_caps_from_string (cs);
  GstVideoInfo info;
  GstBuffer *buf;
  GstMapInfo map;
  gsize i;

  fail_unless (gst_video_info_from_caps (&info, caps));
  gst_caps_unref (caps);
  g_free (cs);
  buf = gst_buffer_new_allocate (NULL, GST_VIDEO_INFO_SIZE (&info), NULL);
  fail_unless (gst_buffer_map (buf, &map, GST_MAP_WRITE));
  for (i = 0; i < map.size; i++)
    map.data[i] = fill + (i * 7) % 64;
  gst_buffer_unmap (buf, &map);
  gst_buffer_add_video_meta_full (buf, GST_VIDEO_FRAME_FLAG_NONE,
      GST_VIDEO_INFO_FORMAT (&info), info.width, info.height,
      GST_VIDEO_INFO_N_PLANES (&info), info.offset, info.stride);
  GST_BUFFER_PTS (buf) = pts;
  GST_BUFFER_DURATION (buf) = 40 * GST_MSECOND;
  return buf;
}

static GstBus *
harness_bus (GstHarness * hr)
{
  GstBus *bus = gst_bus_new ();

  gst_element_set_bus (hr->element, bus);
  return bus;
}

static void
harness_bus_done (GstHarness * hr, GstBus * bus)
{
  gst_element_set_bus (hr->element, NULL);
  gst_object_unref (bus);
}

/* Pops every message of `type` from bus; returns how many, the first one's
 * GError in *first (may be NULL). */
static guint
pop_all (GstBus * bus, GstMessageType type, GError ** first)
{
  GstMessage *msg;
  guint n = 0;

  while ((msg = gst_bus_pop_filtered (bus, type))) {
    if (first && !*first) {
      if (type == GST_MESSAGE_ERROR)
        gst_message_parse_error (msg, first, NULL);
      else if (type == GST_MESSAGE_WARNING)
        gst_message_parse_warning (msg, first, NULL);
    }
    gst_message_unref (msg);
    n++;
  }
  return n;
}

/* Output frame size of the current src caps. */
static void
out_size (GstHarness * hr, gint * w, gint * h, const gchar ** format)
{
  GstCaps *caps = gst_pad_get_current_caps (hr->sinkpad);
  GstStructure *s;

  fail_unless (caps != NULL);
  s = gst_caps_get_structure (caps, 0);
  fail_unless (gst_structure_get_int (s, "width", w));
  fail_unless (gst_structure_get_int (s, "height", h));
  if (format) {
    static gchar fmt[32];

    g_strlcpy (fmt, gst_structure_get_string (s, "format"), sizeof (fmt));
    *format = fmt;
  }
  gst_caps_unref (caps);
}

/* Pushes n frames and pulls n outputs of the expected size. */
static void
push_pull_n (GstHarness * hr, const char *format, int w, int h, int scale,
    int n)
{
  int i;

  for (i = 0; i < n; i++) {
    GstBuffer *out;
    gint ow, oh;

    fail_unless_equals_int (gst_harness_push (hr, make_frame (format, w, h,
                0x20 + i, i * 40 * GST_MSECOND)), GST_FLOW_OK);
    out = gst_harness_pull (hr);
    fail_unless (out != NULL);
    out_size (hr, &ow, &oh, NULL);
    fail_unless_equals_int (ow, w * scale);
    fail_unless_equals_int (oh, h * scale);
    gst_buffer_unref (out);
  }
}

/* A state change to PAUSED fails with an error message in the resource
 * domain naming the model. */
static void
expect_start_error (GstElement * e, GstBus * bus, const gchar * path,
    const gchar * what)
{
  GError *err = NULL;

  fail_unless_equals_int (gst_element_set_state (e, GST_STATE_PAUSED),
      GST_STATE_CHANGE_FAILURE);
  fail_unless (pop_all (bus, GST_MESSAGE_ERROR, &err) >= 1,
      "%s: no error message", what);
  fail_unless (err->domain == GST_RESOURCE_ERROR, "%s: %s", what,
      err->message);
  fail_unless (strstr (err->message, path) != NULL, "%s: %s", what,
      err->message);
  GST_INFO ("%s → %s", what, err->message);
  g_error_free (err);
  gst_element_set_state (e, GST_STATE_NULL);
}

/* ------------------------------------------------------------------ */
/* Model file faults                                                   */

/* The model property is set, then the file disappears before start:
 * start() (re)loads the file and fails with RESOURCE/OPEN_READ naming it.
 * Also when a caps query had loaded it in READY.  Putting the file back
 * makes the next start succeed. */
GST_START_TEST (test_model_deleted_before_start)
{
  GstElement *e = gst_element_factory_make ("ehatsr", NULL);
  GstBus *bus = gst_bus_new ();
  gchar *tmp = copy_model ("hat-tiny-x2"), *good = golden ("hat-tiny-x2");
  gchar *data;
  gsize len;
  GstPad *pad;
  GstCaps *caps;
  gint scale;

  gst_element_set_bus (e, bus);
  g_object_set (e, "model", tmp, "backend", BACKEND_CPU, NULL);
  fail_unless (g_unlink (tmp) == 0);
  expect_start_error (e, bus, tmp, "deleted, never loaded");

  /* loaded by a caps query in READY, deleted, then started */
  fail_unless (g_file_get_contents (good, &data, &len, NULL));
  fail_unless (g_file_set_contents (tmp, data, len, NULL));
  fail_unless_equals_int (gst_element_set_state (e, GST_STATE_READY),
      GST_STATE_CHANGE_SUCCESS);
  pad = gst_element_get_static_pad (e, "sink");
  caps = gst_pad_query_caps (pad, NULL);
  gst_caps_unref (caps);
  gst_object_unref (pad);
  g_object_get (e, "scale", &scale, NULL);
  fail_unless_equals_int (scale, 2);
  fail_unless (g_unlink (tmp) == 0);
  expect_start_error (e, bus, tmp, "deleted after a caps query");

  /* back: starts again */
  fail_unless (g_file_set_contents (tmp, data, len, NULL));
  fail_unless_equals_int (gst_element_set_state (e, GST_STATE_PAUSED),
      GST_STATE_CHANGE_SUCCESS);
  fail_unless_equals_int (pop_all (bus, GST_MESSAGE_ERROR, NULL), 0);
  gst_element_set_state (e, GST_STATE_NULL);

  g_unlink (tmp);
  g_free (data);
  g_free (tmp);
  g_free (good);
  gst_element_set_bus (e, NULL);
  gst_object_unref (bus);
  gst_object_unref (e);
}

GST_END_TEST;

/* Truncated before start at several lengths: inside the 8-byte header
 * length, inside the JSON header, inside the tensor data, one byte short.
 * start() fails with a RESOURCE error naming the file. */
GST_START_TEST (test_model_truncated_before_start)
{
  gchar *tmp = copy_model ("hat-tiny-x2");
  gsize size = file_size (tmp);
  gsize cuts[] = { 0, 5, 8, 100, size / 2, size - 1 };
  guint i;

  for (i = 0; i < G_N_ELEMENTS (cuts); i++) {
    GstElement *e = gst_element_factory_make ("ehatsr", NULL);
    GstBus *bus = gst_bus_new ();
    gchar *again = copy_model ("hat-tiny-x2");
    gchar *what = g_strdup_printf ("truncated to %" G_GSIZE_FORMAT " of %"
        G_GSIZE_FORMAT " bytes", cuts[i], size);

    gst_element_set_bus (e, bus);
    g_object_set (e, "model", again, "backend", BACKEND_CPU, NULL);
    truncate_to (again, cuts[i]);
    expect_start_error (e, bus, again, what);
    gst_element_set_bus (e, NULL);
    gst_object_unref (bus);
    gst_object_unref (e);
    g_unlink (again);
    g_free (again);
    g_free (what);
  }
  g_unlink (tmp);
  g_free (tmp);
}

GST_END_TEST;

/* Truncated while running and between two runs: the running engine keeps
 * its own copy of the weights (frames keep flowing, in = out); a swap to
 * the truncated file warns and keeps the running model; the next start
 * fails with an error; restoring the file restores the element. */
GST_START_TEST (test_model_truncated_between_runs)
{
  gchar *tmp = copy_model ("hat-tiny-x2");
  gsize size = file_size (tmp);
  GstHarness *hr = harness_with_model (tmp, BACKEND_CPU);
  GstBus *bus = harness_bus (hr);
  gchar *cs = caps_str ("RGB", 16, 12), *data, *model;
  GError *err = NULL;
  gsize len;

  fail_unless (g_file_get_contents (tmp, &data, &len, NULL));
  gst_harness_set_src_caps_str (hr, cs);
  push_pull_n (hr, "RGB", 16, 12, 2, 3);

  /* truncated under the running element */
  truncate_to (tmp, size / 2);
  push_pull_n (hr, "RGB", 16, 12, 2, 3);
  /* re-selecting the (now broken) file: warning, the old engine stays */
  g_object_set (hr->element, "model", tmp, NULL);
  fail_unless (pop_all (bus, GST_MESSAGE_WARNING, &err) >= 1);
  fail_unless (strstr (err->message, tmp) != NULL, "%s", err->message);
  g_clear_error (&err);
  fail_unless_equals_int (pop_all (bus, GST_MESSAGE_ERROR, NULL), 0);
  push_pull_n (hr, "RGB", 16, 12, 2, 2);

  /* between two runs: the restart reloads the file and fails */
  fail_unless_equals_int (gst_element_set_state (hr->element,
          GST_STATE_NULL), GST_STATE_CHANGE_SUCCESS);
  fail_unless_equals_int (gst_element_set_state (hr->element,
          GST_STATE_PLAYING), GST_STATE_CHANGE_FAILURE);
  fail_unless (pop_all (bus, GST_MESSAGE_ERROR, &err) >= 1);
  fail_unless (err->domain == GST_RESOURCE_ERROR, "%s", err->message);
  fail_unless (strstr (err->message, tmp) != NULL, "%s", err->message);
  GST_INFO ("truncated between runs → %s", err->message);
  g_clear_error (&err);
  /* a frame pushed now is refused (not lost): upstream sees the flow */
  fail_unless (gst_harness_push (hr, make_frame ("RGB", 16, 12, 0, 0)) !=
      GST_FLOW_OK);
  fail_unless_equals_int (gst_harness_buffers_in_queue (hr), 0);

  /* restored: runs again */
  g_object_get (hr->element, "model", &model, NULL);
  fail_unless_equals_string (model, tmp);
  g_free (model);
  gst_element_set_state (hr->element, GST_STATE_NULL);
  fail_unless (g_file_set_contents (tmp, data, len, NULL));
  fail_unless_equals_int (gst_element_set_state (hr->element,
          GST_STATE_PLAYING), GST_STATE_CHANGE_SUCCESS);
  gst_harness_set_src_caps_str (hr, cs);
  push_pull_n (hr, "RGB", 16, 12, 2, 2);
  fail_unless_equals_int (pop_all (bus, GST_MESSAGE_ERROR, NULL), 0);

  harness_bus_done (hr, bus);
  gst_harness_teardown (hr);
  g_unlink (tmp);
  g_free (tmp);
  g_free (data);
  g_free (cs);
}

GST_END_TEST;

/* ------------------------------------------------------------------ */
/* The model property while PLAYING                                    */

static void
set_model_expect (GstHarness * hr, GstBus * bus, const gchar * path,
    gboolean expect_warning, const gchar * running)
{
  GError *err = NULL;
  gchar *model;

  g_object_set (hr->element, "model", path, NULL);
  if (expect_warning) {
    fail_unless (pop_all (bus, GST_MESSAGE_WARNING, &err) >= 1,
        "no warning for %s", path);
    fail_unless (err->domain == GST_RESOURCE_ERROR);
    fail_unless (strstr (err->message, path) != NULL, "%s", err->message);
    GST_INFO ("model → %s: %s", path, err->message);
    g_clear_error (&err);
  } else {
    fail_unless_equals_int (pop_all (bus, GST_MESSAGE_WARNING, NULL), 0);
  }
  fail_unless_equals_int (pop_all (bus, GST_MESSAGE_ERROR, NULL), 0);
  g_object_get (hr->element, "model", &model, NULL);
  fail_unless_equals_string (model, running);
  g_free (model);
}

/* valid → other valid of the same scale (swap, same caps), → other scale
 * (renegotiation), → missing (warning, keeps running), → back. */
GST_START_TEST (test_model_change_playing)
{
  gchar *x2 = golden ("hat-tiny-x2"), *x2b = golden ("ehat-tiny-x2");
  gchar *x3 = golden ("hat-small-x3");
  GstHarness *hr = harness_with_model (x2, BACKEND_CPU);
  GstBus *bus = harness_bus (hr);
  gchar *cs = caps_str ("RGB", 16, 12);

  gst_harness_set_src_caps_str (hr, cs);
  push_pull_n (hr, "RGB", 16, 12, 2, 2);
  set_model_expect (hr, bus, x2b, FALSE, x2b);
  push_pull_n (hr, "RGB", 16, 12, 2, 2);
  set_model_expect (hr, bus, x3, FALSE, x3);
  push_pull_n (hr, "RGB", 16, 12, 3, 2);
  set_model_expect (hr, bus, "/nonexistent/model.safetensors", TRUE, x3);
  push_pull_n (hr, "RGB", 16, 12, 3, 2);
  set_model_expect (hr, bus, x2, FALSE, x2);
  push_pull_n (hr, "RGB", 16, 12, 2, 2);
  fail_unless_equals_int (gst_harness_buffers_received (hr), 10);

  harness_bus_done (hr, bus);
  gst_harness_teardown (hr);
  g_free (cs);
  g_free (x2);
  g_free (x2b);
  g_free (x3);
}

GST_END_TEST;

typedef struct
{
  GstHarness *hr;
  gint n;
  gint ok, refused;
  GMutex lock;                  /* held around each push */
  GCond cond;
  gint generation;              /* flushes completed (under lock) */
  gboolean wait_after_refusal;
  volatile gint done;
} Pusher;

/* Pushes n frames; after a refused push waits for the flush in progress
 * to complete, as a source does (it would pause its task). */
static gpointer
pusher_thread (gpointer data)
{
  Pusher *p = data;
  gint i;

  for (i = 0; i < p->n; i++) {
    GstFlowReturn r;
    gint gen;

    g_mutex_lock (&p->lock);
    gen = p->generation;
    r = gst_harness_push (p->hr, make_frame ("RGB", 16, 12, i,
            i * 40 * GST_MSECOND));
    if (r == GST_FLOW_OK) {
      p->ok++;
    } else {
      p->refused++;
      while (p->wait_after_refusal && p->generation == gen)
        g_cond_wait (&p->cond, &p->lock);
    }
    g_mutex_unlock (&p->lock);
  }
  g_atomic_int_set (&p->done, 1);
  return NULL;
}

/* Counts QoS messages (the element's way of reporting a dropped frame). */
static guint
count_drop_messages (GstBus * bus)
{
  return pop_all (bus, GST_MESSAGE_QOS, NULL);
}

/* The model toggled between scales 2 and 3 from the application thread
 * while frames stream: every frame pushed with OK comes out (of one of
 * the two sizes) or is reported dropped. */
GST_START_TEST (test_model_toggle_while_streaming)
{
  gchar *x2 = golden ("hat-tiny-x2"), *x3 = golden ("hat-small-x3");
  GstHarness *hr = harness_with_model (x2, BACKEND_CPU);
  GstBus *bus = harness_bus (hr);
  gchar *cs = caps_str ("RGB", 16, 12);
  Pusher p = { .hr = hr, .n = 200 };
  GThread *t;
  guint received, drops, toggles = 0;
  GRand *rand = g_rand_new_with_seed (9);
  const gchar *n_env = g_getenv ("EHAT_FAULT_TOGGLE_FRAMES");

  if (n_env)
    p.n = atoi (n_env);

  g_mutex_init (&p.lock);
  g_cond_init (&p.cond);
  gst_harness_set_src_caps_str (hr, cs);
  t = g_thread_new ("pusher", pusher_thread, &p);
  while (!g_atomic_int_get (&p.done)) {
    g_object_set (hr->element, "model", toggles % 2 ? x2 : x3, NULL);
    toggles++;
    /* irregular, to hit every point of a frame's path */
    g_usleep (g_rand_int_range (rand, 0, 20000));
  }
  g_rand_free (rand);
  g_thread_join (t);
  received = gst_harness_buffers_received (hr);
  drops = count_drop_messages (bus);
  GST_INFO ("%u toggles, %d pushed ok, %d refused, %u out, %u reported "
      "drops", toggles, p.ok, p.refused, received, drops);
  fail_unless_equals_int (pop_all (bus, GST_MESSAGE_ERROR, NULL), 0);
  fail_unless_equals_int (p.refused, 0);
  fail_unless (received + drops == (guint) p.ok,
      "%d frames in, %u out, %u reported dropped (%u toggles): "
      "frames lost silently", p.ok, received, drops, toggles);

  g_mutex_clear (&p.lock);
  g_cond_clear (&p.cond);
  harness_bus_done (hr, bus);
  gst_harness_teardown (hr);
  g_free (cs);
  g_free (x2);
  g_free (x3);
}

GST_END_TEST;

/* ------------------------------------------------------------------ */
/* Flush and seek                                                      */

static void
push_segment (GstHarness * hr, GstClockTime start)
{
  GstSegment seg;

  gst_segment_init (&seg, GST_FORMAT_TIME);
  seg.start = seg.time = start;
  fail_unless (gst_harness_push_event (hr, gst_event_new_segment (&seg)));
}

/* Flush between frames and a seek answered by the source (flush + new
 * segment): frames after it come out with their timestamps; a frame pushed
 * while flushing is refused with FLUSHING; a late-QoS state does not
 * survive the flush (frames after the seek are not dropped). */
GST_START_TEST (test_flush_and_seek)
{
  gchar *x2 = golden ("hat-tiny-x2");
  GstHarness *hr = harness_with_model (x2, BACKEND_CPU);
  GstBus *bus = harness_bus (hr);
  gchar *cs = caps_str ("RGB", 16, 12);
  GstEvent *ev;
  GstBuffer *out;
  int i;

  gst_harness_set_src_caps_str (hr, cs);
  push_pull_n (hr, "RGB", 16, 12, 2, 3);

  /* the seek goes upstream through the element */
  fail_unless (gst_harness_push_upstream_event (hr,
          gst_event_new_seek (1.0, GST_FORMAT_TIME, GST_SEEK_FLAG_FLUSH,
              GST_SEEK_TYPE_SET, 10 * GST_SECOND, GST_SEEK_TYPE_NONE, 0)));
  while ((ev = gst_harness_try_pull_upstream_event (hr))) {
    gboolean seek = GST_EVENT_TYPE (ev) == GST_EVENT_SEEK;
    gst_event_unref (ev);
    if (seek)
      break;
  }
  fail_unless (ev != NULL, "seek not forwarded upstream");

  /* a sink 0.5 s behind: frames up to 1.5 s are late (drop mode) */
  fail_unless (gst_harness_push_upstream_event (hr,
          gst_event_new_qos (GST_QOS_TYPE_UNDERFLOW, 1.5, 500 * GST_MSECOND,
              1 * GST_SECOND)));

  /* the source's answer: flush, a frame while flushing, new segment */
  fail_unless (gst_harness_push_event (hr, gst_event_new_flush_start ()));
  fail_unless_equals_int (gst_harness_push (hr, make_frame ("RGB", 16, 12, 1,
              10 * GST_SECOND)), GST_FLOW_FLUSHING);
  fail_unless (gst_harness_push_event (hr, gst_event_new_flush_stop (TRUE)));
  push_segment (hr, 10 * GST_SECOND);
  gst_harness_set_src_caps_str (hr, cs);

  /* running time restarts at 0: with the QoS state kept, these would be
   * late; the flush reset it, so all come out */
  for (i = 0; i < 3; i++) {
    fail_unless_equals_int (gst_harness_push (hr, make_frame ("RGB", 16, 12,
                i, 10 * GST_SECOND + i * 40 * GST_MSECOND)), GST_FLOW_OK);
    out = gst_harness_pull (hr);
    fail_unless (out != NULL);
    fail_unless_equals_uint64 (GST_BUFFER_PTS (out),
        10 * GST_SECOND + i * 40 * GST_MSECOND);
    gst_buffer_unref (out);
  }
  fail_unless_equals_int (count_drop_messages (bus), 0);
  fail_unless_equals_int (pop_all (bus, GST_MESSAGE_ERROR, NULL), 0);
  fail_unless_equals_int (gst_harness_buffers_received (hr), 6);

  harness_bus_done (hr, bus);
  gst_harness_teardown (hr);
  g_free (cs);
  g_free (x2);
}

GST_END_TEST;

/* Flushes from another thread while frames stream: each push returns OK
 * (and its frame comes out) or FLUSHING (upstream knows); nothing else. */
GST_START_TEST (test_flush_while_streaming)
{
  gchar *x2 = golden ("hat-tiny-x2");
  GstHarness *hr = harness_with_model (x2, BACKEND_CPU);
  GstBus *bus = harness_bus (hr);
  gchar *cs = caps_str ("RGB", 16, 12);
  Pusher p = { .hr = hr, .n = 40, .wait_after_refusal = TRUE };
  GThread *t;
  guint flushes = 0, received;

  g_mutex_init (&p.lock);
  g_cond_init (&p.cond);
  gst_harness_set_src_caps_str (hr, cs);
  t = g_thread_new ("pusher", pusher_thread, &p);
  while (!g_atomic_int_get (&p.done)) {
    g_usleep (50 * 1000);
    /* flush-start interrupts whatever is in flight */
    gst_harness_push_event (hr, gst_event_new_flush_start ());
    g_usleep (5 * 1000);
    /* stop + segment with no push in between */
    g_mutex_lock (&p.lock);
    gst_harness_push_event (hr, gst_event_new_flush_stop (TRUE));
    push_segment (hr, 0);
    p.generation++;
    g_cond_broadcast (&p.cond);
    g_mutex_unlock (&p.lock);
    flushes++;
  }
  g_thread_join (t);
  received = gst_harness_buffers_received (hr);
  GST_INFO ("%u flushes: %d ok, %d refused (FLUSHING), %u out", flushes,
      p.ok, p.refused, received);
  fail_unless (flushes >= 1);
  fail_unless_equals_int (received, p.ok);
  fail_unless_equals_int (p.ok + p.refused, 40);
  fail_unless_equals_int (pop_all (bus, GST_MESSAGE_ERROR, NULL), 0);

  /* and it still works */
  push_pull_n (hr, "RGB", 16, 12, 2, 2);

  g_mutex_clear (&p.lock);
  g_cond_clear (&p.cond);
  harness_bus_done (hr, bus);
  gst_harness_teardown (hr);
  g_free (cs);
  g_free (x2);
}

GST_END_TEST;

/* ------------------------------------------------------------------ */
/* Caps changes                                                        */

/* 32×24 → 40×30 → 32×24 RGB → I420 32×24 → I420 40×30 → RGB: every frame
 * comes out at the new size and format. */
GST_START_TEST (test_caps_change_midstream)
{
  struct
  {
    const char *format;
    int w, h;
  } steps[] = {
    {"RGB", 32, 24}, {"RGB", 40, 30}, {"RGB", 32, 24}, {"I420", 32, 24},
    {"I420", 40, 30}, {"RGB", 40, 30},
  };
  gchar *x2 = golden ("hat-tiny-x2");
  GstHarness *hr = harness_with_model (x2, BACKEND_CPU);
  GstBus *bus = harness_bus (hr);
  guint i;

  for (i = 0; i < G_N_ELEMENTS (steps); i++) {
    gchar *cs = caps_str (steps[i].format, steps[i].w, steps[i].h);
    GstBuffer *out;
    GstVideoInfo info;
    GstCaps *caps;
    gint ow, oh;
    const gchar *fmt;

    gst_harness_set_src_caps_str (hr, cs);
    fail_unless_equals_int (gst_harness_push (hr, make_frame (steps[i].format,
                steps[i].w, steps[i].h, 0x40, i * 40 * GST_MSECOND)),
        GST_FLOW_OK);
    out = gst_harness_pull (hr);
    fail_unless (out != NULL);
    out_size (hr, &ow, &oh, &fmt);
    fail_unless_equals_int (ow, 2 * steps[i].w);
    fail_unless_equals_int (oh, 2 * steps[i].h);
    fail_unless_equals_string (fmt, steps[i].format);
    caps = gst_pad_get_current_caps (hr->sinkpad);
    fail_unless (gst_video_info_from_caps (&info, caps));
    fail_unless (gst_buffer_get_size (out) >= GST_VIDEO_INFO_SIZE (&info));
    gst_caps_unref (caps);
    gst_buffer_unref (out);
    g_free (cs);
  }
  fail_unless_equals_int (gst_harness_buffers_received (hr),
      G_N_ELEMENTS (steps));
  fail_unless_equals_int (pop_all (bus, GST_MESSAGE_ERROR, NULL), 0);

  harness_bus_done (hr, bus);
  gst_harness_teardown (hr);
  g_free (x2);
}

GST_END_TEST;

/* A mid-stream change to a format the element does not take: the caps
 * event is refused, frames are refused with NOT_NEGOTIATED (upstream
 * posts the error in a real pipeline), and changing back recovers. */
GST_START_TEST (test_caps_change_unsupported)
{
  gchar *x2 = golden ("hat-tiny-x2");
  GstHarness *hr = harness_with_model (x2, BACKEND_CPU);
  gchar *cs = caps_str ("RGB", 16, 12);
  GstCaps *bad = gst_caps_from_string ("video/x-raw,format=Y41B,width=16,"
      "height=12,framerate=25/1");
  GstBuffer *buf;

  gst_harness_set_src_caps_str (hr, cs);
  push_pull_n (hr, "RGB", 16, 12, 2, 1);
  /* (the caps event may be stored as sticky and "succeed") */
  gst_harness_push_event (hr, gst_event_new_caps (bad));
  buf = gst_buffer_new_allocate (NULL, 16 * 12 * 2, NULL);
  fail_unless_equals_int (gst_harness_push (hr, buf),
      GST_FLOW_NOT_NEGOTIATED);
  fail_unless_equals_int (gst_harness_buffers_in_queue (hr), 0);
  gst_harness_set_src_caps_str (hr, cs);
  push_pull_n (hr, "RGB", 16, 12, 2, 1);

  gst_caps_unref (bad);
  gst_harness_teardown (hr);
  g_free (cs);
  g_free (x2);
}

GST_END_TEST;

/* ------------------------------------------------------------------ */
/* Injected allocation failures (ehat-fault.h)                         */

static EhatModel *
load_golden (const char *name)
{
  gchar *path = golden (name);
  GError *err = NULL;
  EhatModel *m = ehat_model_load (path, &err);

  fail_unless (m != NULL, "%s: %s", path, err ? err->message : "");
  g_free (path);
  return m;
}

static EhatEngine *
cpu_engine (EhatModel * m)
{
  EhatEngineOptions o = EHAT_ENGINE_OPTIONS_INIT;
  GError *err = NULL;
  EhatEngine *e;

  o.backend = EHAT_BACKEND_CPU;
  o.n_threads = 1;
  e = ehat_engine_new (m, &o, &err);
  fail_unless (e != NULL, "%s", err ? err->message : "");
  return e;
}

static float *
test_image (int w, int h)
{
  float *in = g_new (float, (gsize) 3 * w * h);
  int i;

  for (i = 0; i < 3 * w * h; i++)
    in[i] = 0.5f + 0.4f * sinf (i * 0.37f) * cosf (i * 0.011f);
  return in;
}

/* Engine creation with each of its allocations failing in turn: NULL and
 * EHAT_ERROR_OUT_OF_MEMORY, never a crash (leaks: the ASan run). */
GST_START_TEST (test_oom_engine_creation)
{
  EhatModel *m = load_golden ("hat-tiny-x2");
  guint skip;

  for (skip = 0; skip < 1000; skip++) {
    EhatEngineOptions o = EHAT_ENGINE_OPTIONS_INIT;
    GError *err = NULL;
    EhatEngine *e;

    o.backend = EHAT_BACKEND_CPU;
    ehat_fault_reset ();
    ehat_fault_fail_allocs (skip, 1);
    e = ehat_engine_new (m, &o, &err);
    if (ehat_fault_get_failed_allocs () == 0) {
      /* every allocation of the creation has been failed once */
      fail_unless (e != NULL);
      ehat_engine_free (e);
      break;
    }
    fail_unless (e == NULL, "allocation %u failed, engine created", skip);
    fail_unless (g_error_matches (err, EHAT_ERROR,
            EHAT_ERROR_OUT_OF_MEMORY), "allocation %u: %s", skip,
        err ? err->message : "no error");
    g_error_free (err);
  }
  GST_INFO ("engine creation: %u allocations, each failed once", skip);
  fail_unless (skip > 0 && skip < 1000);
  ehat_fault_reset ();
  ehat_model_unref (m);
}

GST_END_TEST;

/* The tiler on a machine with little memory: allocations above a limit
 * fail, the tiler shrinks tiles until they fit and the result is exactly
 * that of a fault-free run with those tiles.  Transient failure: one
 * retry.  A limit nothing fits under: EHAT_ERROR_OUT_OF_MEMORY, and the
 * engine works again afterwards. */
GST_START_TEST (test_oom_tiler_shrinks)
{
  const int w = 64, h = 48, s = 2;
  EhatModel *m = load_golden ("hat-tiny-x2");
  EhatEngine *e = cpu_engine (m);
  EhatTileOptions opt = EHAT_TILE_OPTIONS_INIT, ref_opt;
  EhatTileStats st, ref_st;
  float *in = test_image (w, h);
  float *out = g_new (float, (gsize) 3 * w * h * s * s);
  float *ref = g_new (float, (gsize) 3 * w * h * s * s);
  gsize whole = ehat_engine_estimate_bytes (e, 1, w, h);
  gsize small = ehat_engine_estimate_bytes (e, 1, 32, 32);
  GError *err = NULL;
  gsize i;
  float maxd = 0;

  fail_unless (whole > small && small > 0);
  /* fault free, automatic size: one whole-frame pass */
  fail_unless (ehat_upscale_tiled (e, in, w, h, ref, &opt, &st, &err));
  fail_unless_equals_int (st.n_tiles, 1);
  fail_unless_equals_int (st.retries, 0);
  ehat_engine_free (e);

  /* fresh engine (no arena yet), limit between a 32×32 tile and the frame */
  e = cpu_engine (m);
  ehat_fault_reset ();
  ehat_fault_set_alloc_limit (small + 4096);
  fail_unless (ehat_upscale_tiled (e, in, w, h, out, &opt, &st, &err),
      "%s", err ? err->message : "");
  GST_INFO ("limit %" G_GSIZE_FORMAT " B (frame needs %" G_GSIZE_FORMAT
      "): %d retries, %d tiles of %dx%d, %u allocations refused",
      small + 4096, whole, st.retries, st.n_tiles, st.tile_width,
      st.tile_height, ehat_fault_get_failed_allocs ());
  fail_unless (st.retries >= 1);
  fail_unless (st.n_tiles > 1);
  fail_unless (st.tile_width < w);
  fail_unless (ehat_fault_get_failed_allocs () >= 1);
  /* the engine remembers: the next frame starts at those tiles, with no
   * refused allocation and no retry, and so does one with the memory
   * back (a stream keeps one geometry) */
  {
    guint refused = ehat_fault_get_failed_allocs ();
    EhatTileStats again;
    float *o2 = g_new (float, (gsize) 3 * w * h * s * s);

    fail_unless (ehat_upscale_tiled (e, in, w, h, o2, &opt, &again, &err));
    fail_unless_equals_int (again.retries, 0);
    fail_unless_equals_int (ehat_fault_get_failed_allocs (), refused);
    fail_unless_equals_int (again.tile_width, st.tile_width);
    fail_unless_equals_int (again.tile_height, st.tile_height);
    fail_unless (memcmp (o2, out, sizeof (float) * 3 * w * h * s * s) == 0);
    ehat_fault_reset ();
    fail_unless (ehat_upscale_tiled (e, in, w, h, o2, &opt, &again, &err));
    fail_unless_equals_int (again.retries, 0);
    fail_unless_equals_int (again.tile_width, st.tile_width);
    g_free (o2);
  }
  ehat_fault_reset ();

  /* the same tiles without faults give the same pixels */
  ref_opt = opt;
  ref_opt.tile_size = st.tile_width;
  ref_opt.tile_height = st.tile_height;
  ref_opt.overlap = MIN (opt.overlap, MIN (st.tile_width,
          st.tile_height) / 2);
  ehat_engine_free (e);
  e = cpu_engine (m);
  fail_unless (ehat_upscale_tiled (e, in, w, h, ref, &ref_opt, &ref_st,
          &err));
  fail_unless_equals_int (ref_st.n_tiles, st.n_tiles);
  for (i = 0; i < (gsize) 3 * w * h * s * s; i++) {
    fail_unless (isfinite (out[i]));
    maxd = MAX (maxd, fabsf (out[i] - ref[i]));
  }
  fail_unless (maxd <= 1e-5f, "recovered output differs by %g", maxd);

  /* transient: the first allocation fails once, one retry */
  ehat_engine_free (e);
  e = cpu_engine (m);
  ehat_fault_fail_allocs (0, 1);
  fail_unless (ehat_upscale_tiled (e, in, w, h, out, &opt, &st, &err),
      "%s", err ? err->message : "");
  fail_unless_equals_int (st.retries, 1);
  fail_unless_equals_int (ehat_fault_get_failed_allocs (), 1);
  ehat_fault_reset ();

  /* nothing fits: a clean error, and the engine recovers */
  ehat_engine_free (e);
  e = cpu_engine (m);
  ehat_fault_set_alloc_limit (1024);
  fail_if (ehat_upscale_tiled (e, in, w, h, out, &opt, &st, &err));
  fail_unless (g_error_matches (err, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY),
      "%s", err->message);
  GST_INFO ("limit 1 KiB → %s", err->message);
  g_clear_error (&err);
  ehat_fault_reset ();
  fail_unless (ehat_upscale_tiled (e, in, w, h, out, &opt, &st, &err));
  fail_unless_equals_int (st.retries, 0);

  ehat_engine_free (e);
  ehat_model_unref (m);
  g_free (in);
  g_free (out);
  g_free (ref);
}

GST_END_TEST;

/* Every allocation of a frame failing in turn, once: the frame always
 * succeeds (the tiler retries). */
GST_START_TEST (test_oom_process_sweep)
{
  const int w = 40, h = 32;
  EhatModel *m = load_golden ("hat-tiny-x2");
  float *in = test_image (w, h), *out = g_new (float, (gsize) 12 * w * h);
  guint skip;

  for (skip = 0; skip < 100; skip++) {
    EhatEngine *e = cpu_engine (m);
    EhatTileStats st;
    GError *err = NULL;
    gboolean ok;

    ehat_fault_reset ();
    ehat_fault_fail_allocs (skip, 1);
    ok = ehat_upscale_tiled (e, in, w, h, out, NULL, &st, &err);
    fail_unless (ok, "allocation %u: %s", skip, err ? err->message : "");
    ehat_engine_free (e);
    if (ehat_fault_get_failed_allocs () == 0)
      break;
    fail_unless (st.retries >= 1);
  }
  GST_INFO ("frame: %u allocations, each failed once and recovered", skip);
  fail_unless (skip < 100);
  ehat_fault_reset ();
  ehat_model_unref (m);
  g_free (in);
  g_free (out);
}

GST_END_TEST;

/* The element on a memory-starved backend: the whole frame does not fit,
 * the tiler shrinks tiles, every frame comes out, an INFO message (no
 * warning, no error), and the next frames start at the smaller tiles
 * without failing allocations again.  Then, on a new element, a limit
 * nothing fits under: an error message (STREAM/FAILED, "out of memory"),
 * the push returns ERROR; with the memory back the element goes on. */
GST_START_TEST (test_oom_element)
{
  const int w = 64, h = 48;
  gchar *x2 = golden ("hat-tiny-x2");
  EhatModel *m = load_golden ("hat-tiny-x2");
  EhatEngine *e = cpu_engine (m);
  /* a 48×48 tile's pass: the limit must also pass the largest weights,
   * which the element uploads under it (the Winograd upsampling
   * convolution's 2.4 MB; a 32×32 pass needs 1.4 MB) */
  gsize small = ehat_engine_estimate_bytes (e, 1, 48, 48);
  GstHarness *hr = harness_with_model (x2, BACKEND_CPU);
  GstBus *bus = harness_bus (hr);
  gchar *cs = caps_str ("RGB", w, h);
  GstStructure *stats;
  GError *err = NULL;
  gint tiles;
  guint refused;

  ehat_engine_free (e);
  ehat_model_unref (m);
  gst_harness_set_src_caps_str (hr, cs);
  ehat_fault_reset ();
  ehat_fault_set_alloc_limit (small + 4096);
  push_pull_n (hr, "RGB", w, h, 2, 1);
  refused = ehat_fault_get_failed_allocs ();
  /* the frames after the first start at the tiles it ended with */
  push_pull_n (hr, "RGB", w, h, 2, 2);
  g_object_get (hr->element, "stats", &stats, NULL);
  fail_unless (gst_structure_get_int (stats, "tiles", &tiles));
  gst_structure_free (stats);
  GST_INFO ("element under a %" G_GSIZE_FORMAT " B limit: %d tiles, %u "
      "allocations refused", small + 4096, tiles,
      ehat_fault_get_failed_allocs ());
  fail_unless (tiles > 1);
  fail_unless (refused >= 1);
  fail_unless_equals_int (ehat_fault_get_failed_allocs (), refused);
  /* no error, no warning; one INFO message says so, for the frame that
   * shrank (pop_filtered drops what does not match: one pass over all) */
  {
    GstMessage *msg;
    guint n_err = 0, n_warn = 0, n_info = 0;

    while ((msg = gst_bus_pop (bus))) {
      if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR)
        n_err++;
      else if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_WARNING)
        n_warn++;
      else if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_INFO && !n_info++)
        gst_message_parse_info (msg, &err, NULL);
      gst_message_unref (msg);
    }
    fail_unless_equals_int (n_err, 0);
    fail_unless_equals_int (n_warn, 0);
    fail_unless_equals_int (n_info, 1);
  }
  fail_unless (g_error_matches (err, GST_RESOURCE_ERROR,
          GST_RESOURCE_ERROR_NO_SPACE_LEFT), "%s", err->message);
  fail_unless (strstr (err->message, "continuing with") != NULL, "%s",
      err->message);
  g_clear_error (&err);

  /* a new element, whose engine needs its arena, and nothing fits (the
   * first one's frames of any size now fit in the arena it holds) */
  harness_bus_done (hr, bus);
  gst_harness_teardown (hr);
  hr = harness_with_model (x2, BACKEND_CPU);
  bus = harness_bus (hr);
  ehat_fault_set_alloc_limit (1024);
  g_free (cs);
  cs = caps_str ("RGB", w + 8, h + 8);
  gst_harness_set_src_caps_str (hr, cs);
  fail_unless_equals_int (gst_harness_push (hr, make_frame ("RGB", w + 8,
              h + 8, 0, 0)), GST_FLOW_ERROR);
  fail_unless_equals_int (gst_harness_buffers_in_queue (hr), 0);
  fail_unless (pop_all (bus, GST_MESSAGE_ERROR, &err) >= 1);
  fail_unless (err->domain == GST_STREAM_ERROR, "%s", err->message);
  fail_unless (strstr (err->message, "out of memory") != NULL, "%s",
      err->message);
  GST_INFO ("element, nothing fits → %s", err->message);
  g_clear_error (&err);

  ehat_fault_reset ();
  push_pull_n (hr, "RGB", w + 8, h + 8, 2, 1);

  harness_bus_done (hr, bus);
  gst_harness_teardown (hr);
  g_free (cs);
  g_free (x2);
}

GST_END_TEST;

/* VmSize of this process in bytes. */
static gsize
vm_size (void)
{
  gchar *status = NULL, *p;
  gsize kib = 0;

  fail_unless (g_file_get_contents ("/proc/self/status", &status, NULL,
          NULL));
  p = strstr (status, "VmSize:");
  fail_unless (p != NULL);
  kib = g_ascii_strtoull (p + 7, NULL, 10);
  g_free (status);
  return kib * 1024;
}

/* Host allocation failure in the element itself: with the address space
 * limited (RLIMIT_AS, this forked test process only) to what is mapped
 * now + 256 MiB, caps of 8000×6000 need ~2.9 GB of float frame buffers;
 * set_info fails with RESOURCE/NO_SPACE_LEFT, the caps are refused, the
 * push is refused, no crash; back at a small size the element works.
 * Skipped under AddressSanitizer (its shadow memory needs terabytes of
 * address space). */
GST_START_TEST (test_host_alloc_failure_element)
{
#if defined(__SANITIZE_ADDRESS__)
  GST_INFO ("skipped under ASan");
#else
  gchar *x2 = golden ("hat-tiny-x2");
  GstHarness *hr = harness_with_model (x2, BACKEND_CPU);
  GstBus *bus = harness_bus (hr);
  gchar *cs = caps_str ("RGB", 16, 12);
  GstCaps *huge = gst_caps_from_string ("video/x-raw,format=GRAY8,"
      "width=8000,height=6000,framerate=25/1");
  GError *err = NULL;
  struct rlimit old, lim;

  if (RUNNING_ON_VALGRIND_GUESS ()) {
    GST_INFO ("skipped under valgrind");
    goto out;
  }
  /* warm first: the engine, threads and buffers of a small size exist */
  gst_harness_set_src_caps_str (hr, cs);
  push_pull_n (hr, "RGB", 16, 12, 2, 1);

  fail_unless (getrlimit (RLIMIT_AS, &old) == 0);
  lim = old;
  lim.rlim_cur = vm_size () + 256 * 1024 * 1024;
  fail_unless (setrlimit (RLIMIT_AS, &lim) == 0);
  gst_harness_push_event (hr, gst_event_new_caps (huge));
  fail_unless (gst_harness_push (hr, gst_buffer_new_allocate (NULL, 16,
              NULL)) != GST_FLOW_OK);
  fail_unless (setrlimit (RLIMIT_AS, &old) == 0);

  fail_unless (pop_all (bus, GST_MESSAGE_ERROR, &err) >= 1,
      "no error message");
  fail_unless (g_error_matches (err, GST_RESOURCE_ERROR,
          GST_RESOURCE_ERROR_NO_SPACE_LEFT), "%s", err->message);
  GST_INFO ("8000x6000 under RLIMIT_AS → %s", err->message);
  g_clear_error (&err);
  fail_unless_equals_int (gst_harness_buffers_in_queue (hr), 0);

  /* recovery needs caps other than the last accepted ones: the sink pad
   * still holds those (the refused event was not stored), so the same
   * caps again would not reach set_info */
  g_free (cs);
  cs = caps_str ("RGB", 20, 12);
  gst_harness_set_src_caps_str (hr, cs);
  push_pull_n (hr, "RGB", 20, 12, 2, 1);

out:
  gst_caps_unref (huge);
  harness_bus_done (hr, bus);
  gst_harness_teardown (hr);
  g_free (cs);
  g_free (x2);
#endif
}

GST_END_TEST;

/* ------------------------------------------------------------------ */
/* Device absent                                                       */

static gboolean
have_gpu (void)
{
  EhatModel *m = load_golden ("hat-tiny-x2");
  EhatEngineOptions o = EHAT_ENGINE_OPTIONS_INIT;
  EhatEngine *e;
  GError *err = NULL;

  o.backend = EHAT_BACKEND_CUDA;
  e = ehat_engine_new (m, &o, &err);
  if (e)
    ehat_engine_free (e);
  else
    GST_INFO ("no GPU: %s", err->message);
  g_clear_error (&err);
  ehat_model_unref (m);
  return e != NULL;
}

/* backend=cuda without a usable device: the start fails with
 * LIBRARY/INIT naming CUDA; backend=auto runs on the CPU after a
 * RESOURCE/SETTINGS warning "No usable GPU, running on the CPU (slow)";
 * a device id that does not exist fails like a missing device.  With a
 * GPU only the last is checked. */
GST_START_TEST (test_device_absent)
{
  gchar *x2 = golden ("hat-tiny-x2");
  gboolean gpu = have_gpu ();
  GstElement *e;
  GstBus *bus;
  GError *err = NULL;

  if (!gpu) {
    GstHarness *hr;
    GstStructure *stats;
    gchar *cs = caps_str ("RGB", 16, 12);

    e = gst_element_factory_make ("ehatsr", NULL);
    bus = gst_bus_new ();
    gst_element_set_bus (e, bus);
    g_object_set (e, "model", x2, "backend", BACKEND_CUDA, NULL);
    fail_unless_equals_int (gst_element_set_state (e, GST_STATE_PAUSED),
        GST_STATE_CHANGE_FAILURE);
    fail_unless (pop_all (bus, GST_MESSAGE_ERROR, &err) >= 1);
    fail_unless (g_error_matches (err, GST_LIBRARY_ERROR,
            GST_LIBRARY_ERROR_INIT), "%s", err->message);
    fail_unless (strstr (err->message, "CUDA") != NULL, "%s", err->message);
    GST_INFO ("backend=cuda, no GPU → %s", err->message);
    g_clear_error (&err);
    gst_element_set_state (e, GST_STATE_NULL);
    gst_element_set_bus (e, NULL);
    gst_object_unref (bus);
    gst_object_unref (e);

    /* auto, and a GPU precision (a pipeline written for a GPU): fp32 on
     * the CPU, the warning saying so for fp16 */
    for (int p = 0; p < 2; p++) {
      hr = harness_with_model (x2, BACKEND_AUTO);
      g_object_set (hr->element, "precision", p ? PRECISION_FP16 : 0, NULL);
      bus = harness_bus (hr);
      /* the warning was posted at start, before the bus was set: restart */
      gst_element_set_state (hr->element, GST_STATE_NULL);
      fail_unless_equals_int (gst_element_set_state (hr->element,
              GST_STATE_PLAYING), GST_STATE_CHANGE_SUCCESS);
      fail_unless (pop_all (bus, GST_MESSAGE_WARNING, &err) >= 1);
      fail_unless (g_error_matches (err, GST_RESOURCE_ERROR,
              GST_RESOURCE_ERROR_SETTINGS), "%s", err->message);
      fail_unless (g_str_has_prefix (err->message,
              "No usable GPU, running on the CPU"), "%s", err->message);
      fail_unless ((strstr (err->message, "fp16 is a GPU precision; running "
                  "fp32") != NULL) == (p == 1), "%s", err->message);
      GST_INFO ("backend=auto, no GPU → warning: %s", err->message);
      g_clear_error (&err);
      gst_harness_set_src_caps_str (hr, cs);
      push_pull_n (hr, "RGB", 16, 12, 2, 1);
      g_object_get (hr->element, "stats", &stats, NULL);
      fail_unless_equals_string (gst_structure_get_string (stats, "backend"),
          "cpu");
      fail_unless_equals_string (gst_structure_get_string (stats,
              "precision"), "fp32");
      gst_structure_free (stats);
      fail_unless_equals_int (pop_all (bus, GST_MESSAGE_ERROR, NULL), 0);
      harness_bus_done (hr, bus);
      gst_harness_teardown (hr);
    }
    g_free (cs);
  }

  /* a device that does not exist (with or without a GPU) */
  e = gst_element_factory_make ("ehatsr", NULL);
  bus = gst_bus_new ();
  gst_element_set_bus (e, bus);
  g_object_set (e, "model", x2, "backend", BACKEND_CUDA, "device-id", 1000,
      NULL);
  fail_unless_equals_int (gst_element_set_state (e, GST_STATE_PAUSED),
      GST_STATE_CHANGE_FAILURE);
  fail_unless (pop_all (bus, GST_MESSAGE_ERROR, &err) >= 1);
  fail_unless (err->domain == GST_LIBRARY_ERROR, "%s", err->message);
  GST_INFO ("backend=cuda device-id=1000 → %s", err->message);
  g_clear_error (&err);
  gst_element_set_state (e, GST_STATE_NULL);
  gst_element_set_bus (e, NULL);
  gst_object_unref (bus);
  gst_object_unref (e);
  g_free (x2);
}

GST_END_TEST;

static Suite *
faults_suite (void)
{
  Suite *s = suite_create ("faults");
  TCase *tc = tcase_create ("general");

  tcase_set_timeout (tc, 300);
  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_model_deleted_before_start);
  tcase_add_test (tc, test_model_truncated_before_start);
  tcase_add_test (tc, test_model_truncated_between_runs);
  tcase_add_test (tc, test_model_change_playing);
  tcase_add_test (tc, test_model_toggle_while_streaming);
  tcase_add_test (tc, test_flush_and_seek);
  tcase_add_test (tc, test_flush_while_streaming);
  tcase_add_test (tc, test_caps_change_midstream);
  tcase_add_test (tc, test_caps_change_unsupported);
  tcase_add_test (tc, test_oom_engine_creation);
  tcase_add_test (tc, test_oom_tiler_shrinks);
  tcase_add_test (tc, test_oom_process_sweep);
  tcase_add_test (tc, test_oom_element);
  tcase_add_test (tc, test_host_alloc_failure_element);
  tcase_add_test (tc, test_device_absent);
  return s;
}

int
main (int argc, char **argv)
{
  g_unsetenv ("EHATSR_MODEL");
  g_unsetenv ("EHAT_FAULT_ALLOC_LIMIT");
  g_unsetenv ("EHAT_FAULT_FAIL_ALLOCS");
  gst_check_init (&argc, &argv);
  return gst_check_run_suite (faults_suite (), "faults", __FILE__);
}
