/* gst/remaster/remaster-mkvpatch.c on files matroskamux made, read back by
 * matroskademux: free-form global tags added, nothing written twice, files
 * of another layout left as they were; an HDR master's luminance restored
 * where matroskamux mis-scaled it, and only there. */
#include "remaster-mkvpatch.h"
#include "remaster-error.h"
#include "gst-file-util.h"

#include <gst/gst.h>
#include <gst/video/video.h>
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
  test_run_to_eos (p);
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

/* The mastering display of the file's video as matroskademux reports it
 * (from the container's Colour element). */
static gboolean
demuxed_mastering (const gchar * path, GstVideoMasteringDisplayInfo * minfo)
{
  g_autoptr (GstCaps) caps = test_demuxed_caps (path);
  return caps && gst_video_mastering_display_info_from_caps (minfo, caps);
}

/* x265 writes a 1000-nit master (0.0001 cd/m² minimum); matroskamux labels
 * it 200 nits; the fix puts the caps' values back.  (128×64 frames: x265's
 * 10-bit lookahead overruns its buffers on much smaller ones.) */
static void
test_mastering_luminance (void)
{
  GstElementFactory *f = gst_element_factory_find ("x265enc");
  if (!f) {
    g_printerr ("x265enc missing: run tools/setup-debian.sh\n");
    g_assert_not_reached ();
  }
  gst_object_unref (f);
  g_autofree gchar *path = make_file ("hdr.mkv", "videotestsrc "
      "num-buffers=4 ! video/x-raw,format=I420_10LE,width=128,height=64,"
      "framerate=4/1,colorimetry=bt2100-pq ! x265enc option-string="
      "\"master-display=G(13250,34500)B(7500,3000)R(34000,16000)"
      "WP(15635,16450)L(10000000,1):max-cll=1000,400\" ! h265parse", NULL);
  GstVideoMasteringDisplayInfo minfo, back;
  g_assert_true (demuxed_mastering (path, &back));
  /* the muxer's error, which this fix is for (a fixed GStreamer writes
   * 10000000 here: then nothing is to be done, and this test says so) */
  g_assert_cmpuint (back.max_display_mastering_luminance, ==, 2000000);

  minfo = back;
  minfo.max_display_mastering_luminance = 10000000;
  minfo.min_display_mastering_luminance = 1;
  g_autoptr (GError) error = NULL;
  gboolean fixed = FALSE;
  /* other values than the mis-scaled ones: left alone */
  GstVideoMasteringDisplayInfo other = minfo;
  other.max_display_mastering_luminance = 40000000;
  other.min_display_mastering_luminance = 50;
  g_assert_true (remaster_mkv_fix_mastering_luminance (path, &other, &fixed,
          &error));
  g_assert_false (fixed);
  g_assert_true (remaster_mkv_fix_mastering_luminance (path, &minfo, &fixed,
          &error));
  g_assert_no_error (error);
  g_assert_true (fixed);
  g_assert_true (demuxed_mastering (path, &back));
  g_assert_cmpuint (back.max_display_mastering_luminance, ==, 10000000);
  g_assert_cmpuint (back.min_display_mastering_luminance, ==, 1);
  guint frames;
  g_autoptr (GstTagList) t = read_back (path, &frames);
  g_assert_cmpuint (frames, ==, 4);
  /* done once: a second pass finds nothing to fix */
  g_assert_true (remaster_mkv_fix_mastering_luminance (path, &minfo, &fixed,
          &error));
  g_assert_false (fixed);

  /* no mastering display in the file: nothing to do, no error */
  g_autofree gchar *sdr = make_file ("sdr.mkv", "videotestsrc num-buffers=2 "
      "! video/x-raw,format=I420,width=32,height=16,framerate=2/1", NULL);
  g_assert_true (remaster_mkv_fix_mastering_luminance (sdr, &minfo, &fixed,
          &error));
  g_assert_no_error (error);
  g_assert_false (fixed);
}

static GstTagList *
attachment_tags (const gchar * name, gsize size)
{
  GstBuffer *buf = gst_buffer_new_allocate (NULL, size, NULL);
  GstMapInfo map;
  g_assert_true (gst_buffer_map (buf, &map, GST_MAP_WRITE));
  for (gsize i = 0; i < size; i++)
    map.data[i] = (guint8) (i * 7 + 3);
  gst_buffer_unmap (buf, &map);
  GstStructure *info = gst_structure_new ("GstTagAttachmentInfo", "filename",
      G_TYPE_STRING, name, "mimetype", G_TYPE_STRING, "font/ttf", NULL);
  GstSample *sample = gst_sample_new (buf, NULL, NULL, info);
  gst_buffer_unref (buf);
  GstTagList *t = gst_tag_list_new (GST_TAG_ATTACHMENT, sample, NULL);
  gst_sample_unref (sample);
  return t;
}

/* The attachment read back is the one written: name, type and bytes. */
static void
check_attachment (const GstTagList * back, const GstTagList * want)
{
  GstSample *a = NULL, *b = NULL;
  g_assert_true (gst_tag_list_get_sample_index (want, GST_TAG_ATTACHMENT, 0,
          &a));
  g_assert_true (gst_tag_list_get_sample_index (back, GST_TAG_ATTACHMENT, 0,
          &b));
  g_assert_cmpstr (gst_structure_get_string (gst_sample_get_info (b),
          "filename"), ==, "font.ttf");
  g_assert_cmpstr (gst_structure_get_string (gst_sample_get_info (b),
          "mimetype"), ==, "font/ttf");
  GstBuffer *ba = gst_sample_get_buffer (a), *bb = gst_sample_get_buffer (b);
  g_assert_cmpuint (gst_buffer_get_size (bb), ==, gst_buffer_get_size (ba));
  GstMapInfo map;
  g_assert_true (gst_buffer_map (ba, &map, GST_MAP_READ));
  g_assert_cmpint (gst_buffer_memcmp (bb, 0, map.data, map.size), ==, 0);
  gst_buffer_unmap (ba, &map);
  gst_sample_unref (a);
  gst_sample_unref (b);
}

/* Attachments (which matroskamux cannot write) after the tags: in a file
 * whose SeekHead matroskamux filled (chapters, cues, tags), and in one
 * without any tags, where the SeekHead gains two entries. */
static void
test_attachments (void)
{
  g_autofree gchar *full = g_build_filename (tmpdir, "chapters.mkv", NULL);
  /* chapters: the SeekHead's fifth entry */
  {
    g_autofree gchar *desc = g_strdup_printf ("videotestsrc num-buffers=12 ! "
        "video/x-raw,width=64,height=48,framerate=12/1 ! vp8enc deadline=1 ! "
        "matroskamux name=mux ! filesink location=\"%s\"", full);
    g_autoptr (GstElement) p = gst_parse_launch (desc, NULL);
    GstElement *mux = gst_bin_get_by_name (GST_BIN (p), "mux");
    GstToc *toc = gst_toc_new (GST_TOC_SCOPE_GLOBAL);
    GstTocEntry *ed = gst_toc_entry_new (GST_TOC_ENTRY_TYPE_EDITION, "ed");
    GstTocEntry *ch = gst_toc_entry_new (GST_TOC_ENTRY_TYPE_CHAPTER, "c");
    gst_toc_entry_set_start_stop_times (ch, 0, GST_SECOND);
    gst_toc_entry_append_sub_entry (ed, ch);
    gst_toc_append_entry (toc, ed);
    gst_toc_setter_set_toc (GST_TOC_SETTER (mux), toc);
    gst_toc_unref (toc);
    gst_tag_setter_add_tags (GST_TAG_SETTER (mux), GST_TAG_MERGE_REPLACE,
        GST_TAG_TITLE, "T", NULL);
    gst_object_unref (mux);
    test_run_to_eos (p);
  }
  g_autofree gchar *bare = make_file ("bare.mkv", "videotestsrc "
      "num-buffers=6 ! video/x-raw,format=I420,width=32,height=16,"
      "framerate=6/1", NULL);
  const gchar *files[] = { full, bare };
  const guint frames_in[] = { 12, 6 };
  for (guint f = 0; f < G_N_ELEMENTS (files); f++) {
    g_autoptr (GstTagList) t = wanted ();
    g_autoptr (GstTagList) att = attachment_tags ("font.ttf", 5000);
    g_autoptr (GError) error = NULL;
    guint added = 0;
    g_assert_true (remaster_mkv_add_tags (files[f], t, &added, &error));
    g_assert_no_error (error);
    g_assert_cmpuint (added, ==, 2);
    g_assert_true (remaster_mkv_add_attachments (files[f], att, &added,
            &error));
    g_assert_no_error (error);
    g_assert_cmpuint (added, ==, 1);
    check_added (files[f], frames_in[f]);
    guint frames;
    g_autoptr (GstTagList) back = read_back (files[f], &frames);
    check_attachment (back, att);
    /* the file has attachments now: a second call adds none */
    g_assert_true (remaster_mkv_add_attachments (files[f], att, &added,
            &error));
    g_assert_cmpuint (added, ==, 0);
  }
}

int
main (int argc, char **argv)
{
  gst_init (&argc, &argv);
  g_test_init (&argc, &argv, NULL);
  g_autoptr (GError) error = NULL;
  tmpdir = g_dir_make_tmp ("ehat-mkvpatch-XXXXXX", &error);
  g_assert_no_error (error);

  g_test_add_func ("/mkvpatch/grow-tags", test_grow_tags);
  g_test_add_func ("/mkvpatch/new-tags", test_new_tags);
  g_test_add_func ("/mkvpatch/refused", test_refused);
  g_test_add_func ("/mkvpatch/mastering-luminance", test_mastering_luminance);
  g_test_add_func ("/mkvpatch/attachments", test_attachments);
  int rc = g_test_run ();
  if (rc == 0) {
    g_autofree gchar *cmd = g_strdup_printf ("rm -rf '%s'", tmpdir);
    (void) system (cmd);
  }
  return rc;
}
