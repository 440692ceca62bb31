/* remaster_mkv_add_tags (gst/remaster/remaster-mkvtags.c): free-form global
 * tags written into files matroskamux made, read back by matroskademux;
 * nothing written twice; files of another layout left as they were. */
#include "remaster-mkvtags.h"
#include "remaster-error.h"

#include <gst/gst.h>
#include <glib/gstdio.h>
#include <string.h>

static gchar *tmpdir;

/* Runs `desc` (ending in a filesink to `path`) to EOS; `title`, when given,
 * becomes a global tag of the muxer named "mux". */
static gchar *
make_file (const gchar * name, const gchar * desc, const gchar * title)
{
  gchar *path = g_build_filename (tmpdir, name, NULL);
  g_autofree gchar *full = g_strdup_printf ("%s ! matroskamux name=mux ! "
      "filesink location=\"%s\"", desc, path);
  g_autoptr (GError) error = NULL;
  g_autoptr (GstElement) p = gst_parse_launch (full, &error);
  g_assert_no_error (error);
  if (title) {
    GstElement *mux = gst_bin_get_by_name (GST_BIN (p), "mux");
    gst_tag_setter_add_tags (GST_TAG_SETTER (mux), GST_TAG_MERGE_REPLACE,
        GST_TAG_TITLE, title, NULL);
    gst_object_unref (mux);
  }
  gst_element_set_state (p, GST_STATE_PLAYING);
  g_autoptr (GstBus) bus = gst_element_get_bus (p);
  GstMessage *m = gst_bus_timed_pop_filtered (bus, GST_CLOCK_TIME_NONE,
      GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  g_assert_cmpint (GST_MESSAGE_TYPE (m), ==, GST_MESSAGE_EOS);
  gst_message_unref (m);
  gst_element_set_state (p, GST_STATE_NULL);
  return path;
}

static void
count_frame (GstElement * sink, GstBuffer * buf, GstPad * pad, guint * n)
{
  (*n)++;
}

/* The file's global tags as matroskademux reports them (pull mode, as a
 * player reads a file), and its number of video frames. */
static GstTagList *
read_back (const gchar * path, guint * frames)
{
  g_autofree gchar *desc = g_strdup_printf ("filesrc location=\"%s\" ! "
      "matroskademux ! fakesink name=s signal-handoffs=true", path);
  g_autoptr (GError) error = NULL;
  g_autoptr (GstElement) p = gst_parse_launch (desc, &error);
  g_assert_no_error (error);
  GstTagList *global = gst_tag_list_new_empty ();
  *frames = 0;
  GstElement *sink = gst_bin_get_by_name (GST_BIN (p), "s");
  g_signal_connect (sink, "handoff", G_CALLBACK (count_frame), frames);
  gst_object_unref (sink);
  gst_element_set_state (p, GST_STATE_PLAYING);
  g_autoptr (GstBus) bus = gst_element_get_bus (p);
  for (;;) {
    GstMessage *m = gst_bus_timed_pop_filtered (bus, GST_CLOCK_TIME_NONE,
        GST_MESSAGE_EOS | GST_MESSAGE_ERROR | GST_MESSAGE_TAG);
    GstMessageType t = GST_MESSAGE_TYPE (m);
    if (t == GST_MESSAGE_TAG) {
      GstTagList *tags;
      gst_message_parse_tag (m, &tags);
      if (gst_tag_list_get_scope (tags) == GST_TAG_SCOPE_GLOBAL)
        gst_tag_list_insert (global, tags, GST_TAG_MERGE_APPEND);
      gst_tag_list_unref (tags);
    }
    gst_message_unref (m);
    g_assert_cmpint (t, !=, GST_MESSAGE_ERROR);
    if (t == GST_MESSAGE_EOS)
      break;
  }
  gst_element_set_state (p, GST_STATE_NULL);
  return global;
}

/* How many times `value` is among the extended-comment strings. */
static guint
count_comment (const GstTagList * tags, const gchar * value)
{
  guint n = 0;
  for (guint i = 0; i < gst_tag_list_get_tag_size (tags,
          GST_TAG_EXTENDED_COMMENT); i++) {
    const gchar *s = NULL;
    if (gst_tag_list_peek_string_index (tags, GST_TAG_EXTENDED_COMMENT, i, &s)
        && g_strcmp0 (s, value) == 0)
      n++;
  }
  return n;
}

static GstTagList *
wanted (void)
{
  GstTagList *t = gst_tag_list_new_empty ();
  const gchar *c[] = { "MAJOR_BRAND=isom", "COMPATIBLE_BRANDS=isomiso2avc1",
    "=no name", "no equals sign"
  };
  for (guint i = 0; i < G_N_ELEMENTS (c); i++)
    gst_tag_list_add (t, GST_TAG_MERGE_APPEND, GST_TAG_EXTENDED_COMMENT, c[i],
        NULL);
  return t;
}

static void
check_added (const gchar * path, guint frames_before)
{
  guint frames;
  g_autoptr (GstTagList) back = read_back (path, &frames);
  g_assert_cmpuint (frames, ==, frames_before);
  g_assert_cmpuint (count_comment (back, "MAJOR_BRAND=isom"), ==, 1);
  g_assert_cmpuint (count_comment (back, "COMPATIBLE_BRANDS=isomiso2avc1"), ==,
      1);
}

/* A file with a Tags element (a global title): the Tag goes after it. */
static void
test_grow_tags (void)
{
  g_autofree gchar *path = make_file ("titled.mkv", "videotestsrc "
      "num-buffers=12 ! video/x-raw,width=64,height=48,framerate=12/1 ! "
      "vp8enc deadline=1", "A title");
  guint frames;
  g_autoptr (GstTagList) before = read_back (path, &frames);
  g_assert_cmpuint (frames, ==, 12);
  g_assert_cmpuint (count_comment (before, "MAJOR_BRAND=isom"), ==, 0);

  g_autoptr (GstTagList) t = wanted ();
  g_autoptr (GError) error = NULL;
  guint added = 99;
  g_assert_true (remaster_mkv_add_tags (path, t, &added, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (added, ==, 2);
  check_added (path, 12);
  g_autoptr (GstTagList) back = read_back (path, &frames);
  const gchar *title = NULL;
  g_assert_true (gst_tag_list_peek_string_index (back, GST_TAG_TITLE, 0,
          &title));
  g_assert_cmpstr (title, ==, "A title");

  /* a second pass finds them there and writes nothing */
  g_assert_true (remaster_mkv_add_tags (path, t, &added, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (added, ==, 0);
  check_added (path, 12);
}

/* A file without any Tags element: a new one, reached through the
 * SeekHead entry matroskamux reserves. */
static void
test_new_tags (void)
{
  g_autofree gchar *path = make_file ("untagged.mkv", "videotestsrc "
      "num-buffers=6 ! video/x-raw,format=I420,width=32,height=16,"
      "framerate=6/1", NULL);
  g_autoptr (GstTagList) t = wanted ();
  g_autoptr (GError) error = NULL;
  guint added = 0;
  g_assert_true (remaster_mkv_add_tags (path, t, &added, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (added, ==, 2);
  check_added (path, 6);
  g_assert_true (remaster_mkv_add_tags (path, t, &added, &error));
  g_assert_cmpuint (added, ==, 0);
}

static void
assert_refused (const gchar * path, const gchar * message)
{
  g_autofree gchar *before = NULL, *after = NULL;
  gsize n_before = 0, n_after = 0;
  g_assert_true (g_file_get_contents (path, &before, &n_before, NULL));
  g_autoptr (GstTagList) t = wanted ();
  g_autoptr (GError) error = NULL;
  g_assert_false (remaster_mkv_add_tags (path, t, NULL, &error));
  g_assert_error (error, REMASTER_ERROR, REMASTER_ERROR_PIPELINE);
  if (!strstr (error->message, message))
    g_printerr ("unexpected message: %s\n", error->message);
  g_assert_nonnull (strstr (error->message, message));
  g_assert_true (g_file_get_contents (path, &after, &n_after, NULL));
  g_assert_cmpuint (n_after, ==, n_before);
  g_assert_cmpint (memcmp (before, after, n_before), ==, 0);
}

/* Files of another layout: an error, and the file as it was. */
static void
test_refused (void)
{
  g_autofree gchar *text = g_build_filename (tmpdir, "text.mkv", NULL);
  g_assert_true (g_file_set_contents (text, "not a matroska file", -1, NULL));
  assert_refused (text, "not a Matroska file");

  /* cut in the middle of a cluster: the segment promises more bytes */
  g_autofree gchar *whole = make_file ("whole.mkv", "videotestsrc "
      "num-buffers=6 ! video/x-raw,width=64,height=48,framerate=6/1 ! "
      "vp8enc deadline=1", "T");
  g_autofree gchar *data = NULL;
  gsize n = 0;
  g_assert_true (g_file_get_contents (whole, &data, &n, NULL));
  g_autofree gchar *cut = g_build_filename (tmpdir, "cut.mkv", NULL);
  g_assert_true (g_file_set_contents (cut, data, (gssize) (n / 2), NULL));
  assert_refused (cut, "does not end the file");

  /* a few bytes of the EBML header only */
  g_assert_true (g_file_set_contents (cut, data, 7, NULL));
  assert_refused (cut, "not a Matroska file");

  g_autoptr (GstTagList) t = wanted ();
  g_autoptr (GError) error = NULL;
  g_autofree gchar *missing = g_build_filename (tmpdir, "missing.mkv", NULL);
  g_assert_false (remaster_mkv_add_tags (missing, t, NULL, &error));
  g_assert_error (error, REMASTER_ERROR, REMASTER_ERROR_PIPELINE);

  /* nothing to add: not even opened */
  g_autoptr (GstTagList) none = gst_tag_list_new (GST_TAG_TITLE, "x", NULL);
  g_clear_error (&error);
  g_assert_true (remaster_mkv_add_tags (missing, none, NULL, &error));
  g_assert_no_error (error);
}

int
main (int argc, char **argv)
{
  gst_init (&argc, &argv);
  g_test_init (&argc, &argv, NULL);
  g_autoptr (GError) error = NULL;
  tmpdir = g_dir_make_tmp ("ehat-mkvtags-XXXXXX", &error);
  g_assert_no_error (error);

  g_test_add_func ("/mkvtags/grow-tags", test_grow_tags);
  g_test_add_func ("/mkvtags/new-tags", test_new_tags);
  g_test_add_func ("/mkvtags/refused", test_refused);
  int rc = g_test_run ();
  if (rc == 0) {
    g_autofree gchar *cmd = g_strdup_printf ("rm -rf '%s'", tmpdir);
    (void) system (cmd);
  }
  return rc;
}
