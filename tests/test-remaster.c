/* ehat-remaster end to end (issue 10): frame-exact segmenting and joining,
 * resume after kill -9, variable frame rate, error paths.
 *
 * Needs EHAT_REMASTER (the program), GST_PLUGIN_PATH to the built ehatsr
 * plugin with the system plugins visible (videotestsrc, vp8enc, vorbisenc,
 * subparse, matroska, avenc_ffv1) and EHATSR_MODEL (the small x2 model).
 * Clips are tiny (96×64, 48 frames, a keyframe every 8 frames) so that the
 * whole suite stays well under a minute on two cores. */
#include "remaster-mkvpatch.h"
#include "gst-file-util.h"

#include <gst/gst.h>
#include <gst/app/app.h>
#include <json-glib/json-glib.h>

#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const gchar *remaster;
static gchar *tmpdir;
static gchar *clip;             /* 48 frames, audio, subtitles, chapters */
static gchar *single_out;       /* its remaster in one segment, one job */

/* ---- helpers ---- */

static gchar *
tmp_path (const gchar * name)
{
  return g_build_filename (tmpdir, name, NULL);
}

typedef struct
{
  gint status;                  /* wait status */
  gchar *out;
  gchar *err;
} Result;

static void
result_clear (Result * r)
{
  g_free (r->out);
  g_free (r->err);
}

/* Runs ehat-remaster with the given arguments (NULL-terminated). */
static Result
run (const gchar * first, ...)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_ptr_array_add (argv, (gpointer) remaster);
  va_list ap;
  va_start (ap, first);
  for (const gchar * a = first; a; a = va_arg (ap, const gchar *))
    g_ptr_array_add (argv, (gpointer) a);
  va_end (ap);
  g_ptr_array_add (argv, NULL);
  Result r = { 0 };
  g_autoptr (GError) error = NULL;
  gboolean ok = g_spawn_sync (NULL, (gchar **) argv->pdata, NULL,
      G_SPAWN_DEFAULT, NULL, NULL, &r.out, &r.err, &r.status, &error);
  g_assert_no_error (error);
  g_assert_true (ok);
  return r;
}

/* A process that died of a signal says which, with what it printed: the
 * hardening run (tests/run-hardening.sh) reads this line to tell such a
 * death from a sanitizer report. */
static void
report_signal (Result * r)
{
  if (WIFSIGNALED (r->status))
    g_printerr ("ehat-remaster was killed by signal %d (%s); stderr:\n%s\n",
        WTERMSIG (r->status), g_strsignal (WTERMSIG (r->status)), r->err);
}

static void
assert_success (Result * r)
{
  report_signal (r);
  if (!WIFEXITED (r->status) || WEXITSTATUS (r->status) != 0)
    g_printerr ("ehat-remaster failed:\n%s\n%s\n", r->out, r->err);
  g_assert_true (WIFEXITED (r->status));
  g_assert_cmpint (WEXITSTATUS (r->status), ==, 0);
  /* nor any GLib/GStreamer warning on the way (a sticky-event misordering
   * in the join was one) */
  if (strstr (r->err, "-WARNING **") || strstr (r->err, "-CRITICAL **")
      || strstr (r->err, "ehat-remaster: warning"))
    g_printerr ("ehat-remaster warned:\n%s\n", r->err);
  g_assert_null (strstr (r->err, "-WARNING **"));
  g_assert_null (strstr (r->err, "-CRITICAL **"));
  g_assert_null (strstr (r->err, "ehat-remaster: warning"));
}

/* A clean failure: an exit status, never a signal, and a message. */
static void
assert_failure (Result * r, gint code, const gchar * message)
{
  report_signal (r);
  g_assert_false (WIFSIGNALED (r->status));
  g_assert_true (WIFEXITED (r->status));
  if (WEXITSTATUS (r->status) != code || !strstr (r->err, message))
    g_printerr ("unexpected: status %d, stderr:\n%s\n",
        WEXITSTATUS (r->status), r->err);
  g_assert_cmpint (WEXITSTATUS (r->status), ==, code);
  g_assert_true (g_str_has_prefix (r->err, "ehat-remaster: error: "));
  g_assert_nonnull (strstr (r->err, message));
}

static JsonObject *
load_manifest (const gchar * workdir, JsonParser ** parser)
{
  g_autofree gchar *path = g_build_filename (workdir, "manifest.json", NULL);
  *parser = json_parser_new ();
  g_autoptr (GError) error = NULL;
  json_parser_load_from_file (*parser, path, &error);
  g_assert_no_error (error);
  return json_node_get_object (json_parser_get_root (*parser));
}

static JsonArray *
manifest_segments (JsonObject * m)
{
  return json_object_get_array_member (m, "segments");
}

/* The last JSON line of `out` whose "event" is `event`. */
static JsonObject *
find_event (const gchar * out, const gchar * event, JsonParser ** keep)
{
  g_auto (GStrv) lines = g_strsplit (out, "\n", -1);
  JsonObject *found = NULL;
  for (guint i = 0; lines[i]; i++) {
    if (lines[i][0] != '{')
      continue;
    JsonParser *p = json_parser_new ();
    g_assert_true (json_parser_load_from_data (p, lines[i], -1, NULL));
    JsonObject *o = json_node_get_object (json_parser_get_root (p));
    if (g_strcmp0 (json_object_get_string_member_with_default (o, "event",
                ""), event) == 0) {
      if (*keep)
        g_object_unref (*keep);
      *keep = p;
      found = o;
    } else {
      g_object_unref (p);
    }
  }
  return found;
}

/* ---- test clips ---- */

static const gchar *srt =
    "1\n00:00:00,200 --> 00:00:00,800\nFirst <line> & one\n\n"
    "2\n00:00:01,000 --> 00:00:01,500\nSecond line\n\n";

typedef struct
{
  guint n;
} VfrState;

/* Variable frame rate: 30, 45, 50 ms, repeating. */
static GstPadProbeReturn
make_vfr (GstPad * pad, GstPadProbeInfo * info, gpointer user_data)
{
  VfrState *st = user_data;
  static const guint ms[] = { 30, 45, 50 };
  GstBuffer *buf = gst_buffer_make_writable (GST_PAD_PROBE_INFO_BUFFER
      (info));
  guint i = st->n++;
  GstClockTime pts = (i / 3) * 125 * GST_MSECOND;
  for (guint k = 0; k < i % 3; k++)
    pts += ms[k] * GST_MSECOND;
  GST_BUFFER_PTS (buf) = pts;
  GST_BUFFER_DURATION (buf) = ms[i % 3] * GST_MSECOND;
  GST_PAD_PROBE_INFO_DATA (info) = buf;
  return GST_PAD_PROBE_OK;
}


/* vfr: variable frame rate; h264: open-GOP H.264 with B-frames (frames
 * reordered across the cuts, leading B-frames that reference the previous
 * GOP) instead of VP8. */
static void
make_clip (const gchar * path, gboolean vfr, gboolean h264)
{
  g_autofree gchar *subs = tmp_path ("subs.srt");
  g_assert_true (g_file_set_contents (subs, srt, -1, NULL));
  /* timeoverlay (gstreamer1.0-x) stamps the frame time when present; the
   * ball moves every frame anyway */
  GstElementFactory *f = gst_element_factory_find ("timeoverlay");
  const gchar *overlay = f ? "timeoverlay font-desc=\"Sans 9\" ! " : "";
  if (f)
    gst_object_unref (f);
  g_autofree gchar *desc = g_strdup_printf ("videotestsrc pattern=ball "
      "num-buffers=48 ! video/x-raw,width=96,height=64,framerate=24/1 ! %s"
      "videoconvert ! %s ! "
      "mux.video_0 audiotestsrc num-buffers=94 samplesperbuffer=1024 "
      "wave=ticks ! audio/x-raw,rate=48000,channels=2 ! vorbisenc ! "
      "mux.audio_0 filesrc location=\"%s\" ! subparse ! mux.subtitle_0 "
      "matroskamux name=mux ! filesink location=\"%s\"", overlay,
      h264 ? "x264enc name=enc key-int-max=8 bframes=2 b-adapt=false "
      "option-string=open-gop=1:scenecut=0" :
      "vp8enc name=enc keyframe-max-dist=8 deadline=1", subs, path);
  g_autoptr (GError) error = NULL;
  g_autoptr (GstElement) p = gst_parse_launch (desc, &error);
  g_assert_no_error (error);

  /* two chapters and a title: both must survive the remaster */
  GstElement *mux = gst_bin_get_by_name (GST_BIN (p), "mux");
  GstToc *toc = gst_toc_new (GST_TOC_SCOPE_GLOBAL);
  GstTocEntry *ed = gst_toc_entry_new (GST_TOC_ENTRY_TYPE_EDITION, "ed");
  for (guint i = 0; i < 2; i++) {
    g_autofree gchar *uid = g_strdup_printf ("ch%u", i);
    GstTocEntry *ch = gst_toc_entry_new (GST_TOC_ENTRY_TYPE_CHAPTER, uid);
    gst_toc_entry_set_start_stop_times (ch, i * GST_SECOND,
        (i + 1) * GST_SECOND);
    GstTagList *t = gst_tag_list_new (GST_TAG_TITLE, i ? "Two" : "One", NULL);
    gst_toc_entry_set_tags (ch, t);
    gst_toc_entry_append_sub_entry (ed, ch);
  }
  gst_toc_append_entry (toc, ed);
  gst_toc_setter_set_toc (GST_TOC_SETTER (mux), toc);
  gst_toc_unref (toc);
  gst_tag_setter_add_tags (GST_TAG_SETTER (mux), GST_TAG_MERGE_REPLACE,
      GST_TAG_TITLE, "ehat-remaster test clip", NULL);
  gst_object_unref (mux);

  VfrState st = { 0 };
  if (vfr) {
    GstElement *enc = gst_bin_get_by_name (GST_BIN (p), "enc");
    GstPad *pad = gst_element_get_static_pad (enc, "sink");
    gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER, make_vfr, &st, NULL);
    gst_object_unref (pad);
    gst_object_unref (enc);
  }
  test_run_to_eos (p);

  /* free-form global tags, as ffmpeg writes them (matroskamux itself cannot
   * write these): --check wants them in every remaster */
  GstTagList *ff = gst_tag_list_new (GST_TAG_EXTENDED_COMMENT,
      "MAJOR_BRAND=isom", NULL);
  gst_tag_list_add (ff, GST_TAG_MERGE_APPEND, GST_TAG_EXTENDED_COMMENT,
      "COMPATIBLE_BRANDS=isomiso2avc1mp41", NULL);
  guint added = 0;
  g_assert_true (remaster_mkv_add_tags (path, ff, &added, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (added, ==, 2);
  gst_tag_list_unref (ff);
  /* and an attachment (a font for SSA/ASS subtitles), which matroskamux
   * cannot write either */
  GstBuffer *font = gst_buffer_new_allocate (NULL, 3000, NULL);
  gst_buffer_memset (font, 0, 0x5a, 3000);
  GstSample *sample = gst_sample_new (font, NULL, NULL,
      gst_structure_new ("GstTagAttachmentInfo", "filename", G_TYPE_STRING,
          "font.ttf", "mimetype", G_TYPE_STRING, "font/ttf", NULL));
  gst_buffer_unref (font);
  GstTagList *att = gst_tag_list_new (GST_TAG_ATTACHMENT, sample, NULL);
  gst_sample_unref (sample);
  g_assert_true (remaster_mkv_add_attachments (path, att, &added, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (added, ==, 1);
  gst_tag_list_unref (att);
}

/* Runs `desc` into a file at `path`. */
static void
make_file (const gchar * desc, const gchar * path)
{
  g_autofree gchar *full = g_strdup_printf ("%s ! filesink location=\"%s\"",
      desc, path);
  g_autoptr (GError) error = NULL;
  g_autoptr (GstElement) p = gst_parse_launch (full, &error);
  g_assert_no_error (error);
  test_run_to_eos (p);
}

/* ---- decoded frames ---- */

typedef struct
{
  GstClockTime pts;
  guint32 hash;
} Frame;

static guint32
fnv1a (const guint8 * d, gsize n)
{
  guint32 h = 2166136261u;
  for (gsize i = 0; i < n; i++)
    h = (h ^ d[i]) * 16777619u;
  return h;
}

/* Every frame of the file's video, decoded to I420, in output order. */
static GArray *
decode_frames (const gchar * path)
{
  g_autofree gchar *desc = g_strdup_printf ("filesrc location=\"%s\" ! "
      "matroskademux name=d d.video_0 ! queue ! decodebin ! videoconvert ! "
      "video/x-raw,format=I420 ! appsink name=s sync=false", path);
  g_autoptr (GError) error = NULL;
  g_autoptr (GstElement) p = gst_parse_launch (desc, &error);
  g_assert_no_error (error);
  GstElement *sink = gst_bin_get_by_name (GST_BIN (p), "s");
  gst_element_set_state (p, GST_STATE_PLAYING);
  GArray *frames = g_array_new (FALSE, FALSE, sizeof (Frame));
  GstSample *s;
  while ((s = gst_app_sink_pull_sample (GST_APP_SINK (sink)))) {
    GstBuffer *b = gst_sample_get_buffer (s);
    GstMapInfo map;
    g_assert_true (gst_buffer_map (b, &map, GST_MAP_READ));
    Frame f = { GST_BUFFER_PTS (b), fnv1a (map.data, map.size) };
    gst_buffer_unmap (b, &map);
    g_array_append_val (frames, f);
    gst_sample_unref (s);
  }
  g_autoptr (GstBus) bus = gst_element_get_bus (p);
  g_assert_null (gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR));
  gst_element_set_state (p, GST_STATE_NULL);
  gst_object_unref (sink);
  return frames;
}

static void assert_check_ok (const gchar * in, const gchar * out);

/* a and b decode to the same n frames, times and pixels */
static void
assert_same_n_frames (const gchar * a, const gchar * b, guint n)
{
  g_autoptr (GArray) fa = decode_frames (a);
  g_autoptr (GArray) fb = decode_frames (b);
  g_assert_cmpuint (fa->len, ==, n);
  g_assert_cmpuint (fb->len, ==, fa->len);
  for (guint i = 0; i < fa->len; i++) {
    Frame *x = &g_array_index (fa, Frame, i), *y = &g_array_index (fb, Frame,
        i);
    if (x->pts != y->pts || x->hash != y->hash)
      g_printerr ("frame %u: %" GST_TIME_FORMAT " %08x vs %" GST_TIME_FORMAT
          " %08x\n", i, GST_TIME_ARGS (x->pts), x->hash,
          GST_TIME_ARGS (y->pts), y->hash);
    g_assert_cmpuint (x->pts, ==, y->pts);
    g_assert_cmphex (x->hash, ==, y->hash);
  }
}

/* the same for the 48-frame test clip */
static void
assert_same_frames (const gchar * a, const gchar * b)
{
  assert_same_n_frames (a, b, 48);
}

/* --check: the input's frame times, audio/subtitle packets, chapters and
 * tags in the output. */
static void
assert_check_counts (const gchar * in, const gchar * out, gint frames,
    gint audio, gint subtitles, gint chapters)
{
  Result r = run ("--check", "--json", in, out, NULL);
  assert_success (&r);
  JsonParser *keep = NULL;
  JsonObject *o = find_event (r.out, "check", &keep);
  g_assert_nonnull (o);
  g_assert_true (json_object_get_boolean_member (o, "ok"));
  g_assert_cmpint (json_object_get_int_member (o, "video-frames"), ==, frames);
  g_assert_cmpint (json_object_get_int_member (o, "audio-streams"), ==, audio);
  g_assert_cmpint (json_object_get_int_member (o, "subtitle-streams"), ==,
      subtitles);
  g_assert_cmpint (json_object_get_int_member (o, "chapters"), ==, chapters);
  g_object_unref (keep);
  result_clear (&r);
}

/* the 48-frame test clip: one audio and one subtitle stream, 3 chapters */
static void
assert_check_ok (const gchar * in, const gchar * out)
{
  assert_check_counts (in, out, 48, 1, 1, 3);
}

/* The first video stream's mastering-display-info as demuxed, or NULL. */
static gchar *
demuxed_mastering (const gchar * path)
{
  g_autoptr (GstCaps) caps = test_demuxed_caps (path);
  const gchar *v = caps ? gst_structure_get_string (gst_caps_get_structure
      (caps, 0), "mastering-display-info") : NULL;
  return g_strdup (v);
}

/* ---- tests ---- */

/* HDR10: 10 bits, PQ and the mastering display survive two segments and
 * the join (each Matroska write by matroskamux 1.22 used to divide the
 * master's luminance by 5: 200 nits in, 8 out). */
static void
test_hdr (void)
{
  g_autofree gchar *in = tmp_path ("hdr.mkv");
  g_autofree gchar *out = tmp_path ("hdr-x2.mkv");
  make_file ("videotestsrc num-buffers=8 ! video/x-raw,format=I420_10LE,"
      "width=128,height=64,framerate=8/1,colorimetry=bt2100-pq ! x265enc "
      "key-int-max=4 option-string=\"master-display=G(13250,34500)"
      "B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1):"
      "max-cll=1000,400\" ! h265parse ! matroskamux", in);
  Result r = run (in, out, "--encoder", "x265", "--segment-seconds", "0.5",
      "--jobs", "1", NULL);
  assert_success (&r);
  result_clear (&r);
  g_autofree gchar *a = demuxed_mastering (in);
  g_autofree gchar *b = demuxed_mastering (out);
  g_assert_nonnull (a);
  g_assert_cmpstr (b, ==, a);
}

/* The raw format the file's H.264 video decodes to. */
static gchar *
decoded_format (const gchar * path)
{
  g_autofree gchar *desc = g_strdup_printf ("filesrc location=\"%s\" ! "
      "matroskademux ! h264parse ! avdec_h264 ! fakesink name=s", path);
  g_autoptr (GstCaps) caps = test_prerolled_caps (desc);

  g_assert_nonnull (caps);
  return g_strdup (gst_structure_get_string (gst_caps_get_structure (caps,
              0), "format"));
}

/* A professional source (10-bit 4:2:2, as ProRes or DNxHR decode to)
 * keeps its chroma and its bits: ehatsr takes I422_10LE, so nothing in
 * front of it converts, and x264 encodes High 4:2:2 10-bit. */
static void
test_pro_422 (void)
{
  g_autofree gchar *in = tmp_path ("pro422.mkv");
  g_autofree gchar *out = tmp_path ("pro422-x2.mkv");
  make_file ("videotestsrc num-buffers=8 pattern=ball ! video/x-raw,"
      "format=I422_10LE,width=96,height=64,framerate=8/1 ! x264enc "
      "key-int-max=4 ! h264parse ! matroskamux", in);
  Result r = run (in, out, "--encoder", "x264", "--segment-seconds", "0.5",
      "--jobs", "1", NULL);
  assert_success (&r);
  result_clear (&r);
  g_autofree gchar *a = decoded_format (in);
  g_autofree gchar *b = decoded_format (out);
  g_assert_cmpstr (a, ==, "I422_10LE");
  g_assert_cmpstr (b, ==, a);
}

/* The tracks as mkvmerge -J lists them: type, name, language and every
 * flag, one line each. */
static gchar *
track_list (const gchar * path)
{
  const gchar *argv[] = { "mkvmerge", "-J", path, NULL };
  g_autofree gchar *out = NULL;
  gint status = 0;
  g_autoptr (GError) error = NULL;
  g_assert_true (g_spawn_sync (NULL, (gchar **) argv, NULL,
          G_SPAWN_SEARCH_PATH | G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL, &out,
          NULL, &status, &error));
  g_assert_no_error (error);
  g_assert_cmpint (status, ==, 0);
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_assert_true (json_parser_load_from_data (parser, out, -1, NULL));
  JsonArray *tracks = json_object_get_array_member (json_node_get_object
      (json_parser_get_root (parser)), "tracks");
  static const gchar *keys[] = { "track_name", "language", "default_track",
    "forced_track", "enabled_track", "flag_hearing_impaired",
    "flag_commentary"
  };
  GString *s = g_string_new (NULL);
  for (guint i = 0; i < json_array_get_length (tracks); i++) {
    JsonObject *t = json_array_get_object_element (tracks, i);
    JsonObject *p = json_object_get_object_member (t, "properties");
    g_string_append (s, json_object_get_string_member (t, "type"));
    for (guint k = 0; k < G_N_ELEMENTS (keys); k++) {
      JsonNode *n = json_object_get_member (p, keys[k]);
      g_autofree gchar *v = n ? json_to_string (n, FALSE) : g_strdup ("-");
      g_string_append_printf (s, " %s=%s", keys[k], v);
    }
    g_string_append_c (s, '\n');
  }
  return g_string_free (s, FALSE);
}

/* Track flags (default, forced, hearing impaired), which matroskamux does
 * not write, and names: the input's, not matroskamux's "Subtitle". */
static void
test_track_flags (void)
{
  g_autofree gchar *in = tmp_path ("flags.mkv");
  g_autofree gchar *out = tmp_path ("flags-x2.mkv");
  g_autofree gchar *subs = tmp_path ("subs.srt");
  g_autofree gchar *desc = g_strdup_printf ("videotestsrc num-buffers=12 ! "
      "video/x-raw,width=64,height=48,framerate=12/1 ! vp8enc deadline=1 ! "
      "mux.video_0 filesrc location=\"%s\" ! subparse ! mux.subtitle_0 "
      "filesrc location=\"%s\" ! subparse ! mux.subtitle_1 "
      "matroskamux name=mux", subs, subs);
  make_file (desc, in);
  const gchar *edit[] = { "mkvpropedit", in, "--edit", "track:s1", "--set",
    "flag-default=0", "--set", "flag-forced=1", "--set", "name=Forced",
    "--edit", "track:s2", "--set", "flag-hearing-impaired=1", "--delete",
    "name", "--edit", "track:v1", "--delete", "name", NULL
  };
  gint status = -1;
  g_assert_true (g_spawn_sync (NULL, (gchar **) edit, NULL,
          G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, NULL,
          NULL, &status, NULL));
  g_assert_cmpint (status, ==, 0);
  g_autofree gchar *want = track_list (in);
  g_assert_nonnull (strstr (want, "forced_track=true"));
  g_assert_nonnull (strstr (want, "flag_hearing_impaired=true"));

  Result r = run (in, out, "--encoder", "ffv1", NULL);
  assert_success (&r);
  result_clear (&r);
  g_autofree gchar *got = track_list (out);
  g_assert_cmpstr (got, ==, want);

  /* --check compares the flags too */
  r = run ("--check", in, out, NULL);
  assert_success (&r);
  result_clear (&r);
  const gchar *unforce[] = { "mkvpropedit", out, "--edit", "track:s1",
    "--set", "flag-forced=0", NULL
  };
  g_assert_true (g_spawn_sync (NULL, (gchar **) unforce, NULL,
          G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, NULL,
          NULL, &status, NULL));
  g_assert_cmpint (status, ==, 0);
  r = run ("--check", in, out, NULL);
  g_assert_true (WIFEXITED (r.status));
  g_assert_cmpint (WEXITSTATUS (r.status), ==, 1);
  g_assert_nonnull (strstr (r.out, "DIFFERENT: subtitle track 0: flags \" "
          "default=0 forced=1\" in the input, \" default=0\" in the output"));
  result_clear (&r);
}

/* One process, one segment: the reference for the others. */
static void
test_single (void)
{
  g_autofree gchar *work = tmp_path ("single.work");
  Result r = run (clip, single_out, "--encoder", "ffv1", "--segment-seconds",
      "100", "--jobs", "1", "--workdir", work, "--keep-workdir", "--json",
      NULL);
  assert_success (&r);
  JsonParser *keep = NULL;
  JsonObject *rep = find_event (r.out, "report", &keep);
  g_assert_nonnull (rep);
  g_assert_cmpint (json_object_get_int_member (rep, "frames-in"), ==, 48);
  g_assert_cmpint (json_object_get_int_member (rep, "frames-out"), ==, 48);
  g_assert_cmpint (json_object_get_int_member (rep, "dropped"), ==, 0);
  g_assert_cmpint (json_object_get_int_member (rep, "segments"), ==, 1);
  g_assert_cmpint (json_object_get_int_member (rep, "width-out"), ==, 192);
  g_assert_cmpint (json_object_get_int_member (rep, "height-out"), ==, 128);
  g_object_unref (keep);
  result_clear (&r);
  assert_check_ok (clip, single_out);
}

/* --ensemble reaches every worker's ehatsr: other frames than the plain
 * single run's, at the same times, and the setting is kept in the manifest
 * so that a resume asking for another one is refused. */
static void
test_ensemble (void)
{
  g_autofree gchar *out = tmp_path ("ensemble.mkv");
  g_autofree gchar *work = tmp_path ("ensemble.work");
  Result r = run (clip, out, "--encoder", "ffv1", "--segment-seconds", "1",
      "--jobs", "2", "--ensemble", "2", "--workdir", work, "--keep-workdir",
      "--json", NULL);
  assert_success (&r);
  JsonParser *keep = NULL;
  JsonObject *rep = find_event (r.out, "report", &keep);
  g_assert_nonnull (rep);
  g_assert_cmpint (json_object_get_int_member (rep, "ensemble"), ==, 2);
  g_assert_cmpint (json_object_get_int_member (rep, "frames-out"), ==, 48);
  g_object_unref (keep);
  result_clear (&r);

  g_autoptr (JsonParser) mp = NULL;
  JsonObject *m = load_manifest (work, &mp);
  g_assert_cmpint (json_object_get_int_member (json_object_get_object_member
          (m, "settings"), "ensemble"), ==, 2);

  g_autoptr (GArray) fa = decode_frames (single_out);
  g_autoptr (GArray) fb = decode_frames (out);
  guint differ = 0;
  g_assert_cmpuint (fb->len, ==, fa->len);
  for (guint i = 0; i < fa->len; i++) {
    g_assert_cmpuint (g_array_index (fa, Frame, i).pts, ==,
        g_array_index (fb, Frame, i).pts);
    differ += g_array_index (fa, Frame, i).hash
        != g_array_index (fb, Frame, i).hash;
  }
  g_assert_cmpuint (differ, >, fa->len / 2);

  g_assert_cmpint (g_unlink (out), ==, 0);
  Result again = run (clip, out, "--resume", "--ensemble", "4", "--workdir",
      work, NULL);
  assert_failure (&again, 2, "ensemble 2, not 4");
  result_clear (&again);
}

/* Four segments on two workers must give the same frames, bit for bit, as
 * the single process: nothing lost, doubled or reordered at the cuts. */
static void
test_segments_frame_exact (void)
{
  g_autofree gchar *out = tmp_path ("segments.mkv");
  g_autofree gchar *work = tmp_path ("segments.work");
  Result r = run (clip, out, "--encoder", "ffv1", "--segment-seconds", "0.5",
      "--jobs", "2", "--workdir", work, "--keep-workdir", "--json", NULL);
  assert_success (&r);

  /* progress lines, then the report */
  JsonParser *keep = NULL;
  JsonObject *prog = find_event (r.out, "progress", &keep);
  g_assert_nonnull (prog);
  g_assert_cmpint (json_object_get_int_member (prog, "total"), ==, 48);
  JsonObject *rep = find_event (r.out, "report", &keep);
  g_assert_nonnull (rep);
  g_assert_cmpint (json_object_get_int_member (rep, "frames-out"), ==, 48);
  g_assert_cmpint (json_object_get_int_member (rep, "dropped"), ==, 0);
  g_assert_cmpint (json_object_get_int_member (rep, "jobs"), ==, 2);
  g_object_unref (keep);
  result_clear (&r);

  g_autoptr (JsonParser) mp = NULL;
  JsonObject *m = load_manifest (work, &mp);
  JsonArray *segs = manifest_segments (m);
  g_assert_cmpuint (json_array_get_length (segs), ==, 4);
  gint64 sum = 0;
  for (guint i = 0; i < 4; i++) {
    JsonObject *s = json_array_get_object_element (segs, i);
    g_assert_cmpstr (json_object_get_string_member (s, "state"), ==, "done");
    g_assert_cmpint (json_object_get_int_member (s, "frames"), ==,
        json_object_get_int_member (s, "frames-out"));
    sum += json_object_get_int_member (s, "frames");
    if (i > 0)                  /* contiguous ranges */
      g_assert_cmpint (json_object_get_int_member (s, "start"), ==,
          json_object_get_int_member (json_array_get_object_element (segs,
                  i - 1), "end"));
  }
  g_assert_cmpint (sum, ==, 48);

  assert_same_frames (single_out, out);
  assert_check_ok (clip, out);

  /* --status of the finished job */
  Result st = run ("--status", work, "--json", NULL);
  assert_success (&st);
  g_assert_nonnull (strstr (st.out, "\"state\":\"complete\""));
  result_clear (&st);
}

/* --backend cuda with two workers on devices 0 and 1 (the cuda-emu suite
 * runs this on two emulated GPUs, kernels/emu: EHAT_EMU_DEVICES=2): the
 * same frames as one CUDA worker, every segment done, --check clean. */
static void
test_cuda_devices (void)
{
  g_autofree gchar *small = tmp_path ("small.mkv");
  g_autofree gchar *one = tmp_path ("cuda-one.mkv");
  g_autofree gchar *two = tmp_path ("cuda-two.mkv");
  g_autofree gchar *work = tmp_path ("cuda-two.work");
  /* 16 small frames, a keyframe every 4 (0.5 s): each emulated frame is
   * about a second of CPU */
  make_file ("videotestsrc pattern=ball num-buffers=16 ! "
      "video/x-raw,width=48,height=32,framerate=8/1 ! videoconvert ! "
      "vp8enc keyframe-max-dist=4 deadline=1 ! matroskamux", small);

  Result r = run (small, one, "--backend", "cuda", "--encoder", "ffv1",
      "--jobs", "1", NULL);
  assert_success (&r);
  result_clear (&r);
  r = run (small, two, "--backend", "cuda", "--devices", "0,1", "--encoder",
      "ffv1", "--segment-seconds", "0.5", "--workdir", work, "--keep-workdir",
      "--json", NULL);
  assert_success (&r);
  JsonParser *keep = NULL;
  JsonObject *rep = find_event (r.out, "report", &keep);
  g_assert_nonnull (rep);
  g_assert_cmpint (json_object_get_int_member (rep, "jobs"), ==, 2);
  g_assert_cmpstr (json_object_get_string_member (rep, "devices"), ==,
      "0,1");
  g_assert_cmpint (json_object_get_int_member (rep, "frames-out"), ==, 16);
  g_object_unref (keep);
  result_clear (&r);

  g_autoptr (JsonParser) mp = NULL;
  JsonArray *segs = manifest_segments (load_manifest (work, &mp));
  g_assert_cmpuint (json_array_get_length (segs), ==, 4);
  for (guint i = 0; i < 4; i++)
    g_assert_cmpstr (json_object_get_string_member
        (json_array_get_object_element (segs, i), "state"), ==, "done");

  assert_same_n_frames (one, two, 16);
  /* --check: frame times kept (the clip has no other streams) */
  assert_check_counts (small, two, 16, 0, 0, 0);
}

static void
set_process_group (gpointer user_data)
{
  setpgid (0, 0);
}

/* kill -9 of the whole run (driver and workers) in the middle; the rerun
 * redoes only the segments that were in progress. */
static void
test_resume_after_kill (void)
{
  g_autofree gchar *out = tmp_path ("resume.mkv");
  g_autofree gchar *work = tmp_path ("resume.work");
  const gchar *argv[] = { remaster, clip, out, "--encoder", "ffv1",
    "--segment-seconds", "0.5", "--jobs", "1", "--workdir", work,
    "--keep-workdir", NULL
  };
  g_autoptr (GError) error = NULL;
  GPid pid;
  g_assert_true (g_spawn_async (NULL, (gchar **) argv, NULL,
          G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDOUT_TO_DEV_NULL,
          set_process_group, NULL, &pid, &error));
  g_assert_no_error (error);

  /* wait until one segment is done and the next one is being worked on */
  g_autoptr (GHashTable) was_running = g_hash_table_new (NULL, NULL);
  g_autoptr (GHashTable) was_done = g_hash_table_new (NULL, NULL);
  gint64 deadline = g_get_monotonic_time () + 120 * G_TIME_SPAN_SECOND;
  gboolean caught = FALSE;
  while (!caught && g_get_monotonic_time () < deadline) {
    g_usleep (20 * 1000);
    g_autofree gchar *path = g_build_filename (work, "manifest.json", NULL);
    g_autoptr (JsonParser) p = json_parser_new ();
    if (!json_parser_load_from_file (p, path, NULL))
      continue;
    JsonArray *segs = manifest_segments (json_node_get_object
        (json_parser_get_root (p)));
    guint done = 0, running = 0;
    for (guint i = 0; i < json_array_get_length (segs); i++) {
      const gchar *state = json_object_get_string_member
          (json_array_get_object_element (segs, i), "state");
      done += !g_strcmp0 (state, "done");
      running += !g_strcmp0 (state, "running");
    }
    if (done >= 1 && running >= 1) {
      kill (-pid, SIGKILL);
      caught = TRUE;
      /* what the manifest says now is what the rerun must find */
      for (guint i = 0; i < json_array_get_length (segs); i++) {
        const gchar *state = json_object_get_string_member
            (json_array_get_object_element (segs, i), "state");
        if (!g_strcmp0 (state, "running"))
          g_hash_table_add (was_running, GUINT_TO_POINTER (i));
        if (!g_strcmp0 (state, "done"))
          g_hash_table_add (was_done, GUINT_TO_POINTER (i));
      }
    }
  }
  if (!caught)
    kill (-pid, SIGKILL);
  gint status;
  waitpid (pid, &status, 0);
  g_spawn_close_pid (pid);
  g_assert_true (caught);
  g_assert_true (WIFSIGNALED (status));
  g_assert_false (g_file_test (out, G_FILE_TEST_EXISTS));

  /* without --resume the work directory is refused */
  Result busy = run (clip, out, "--encoder", "ffv1", "--workdir", work, NULL);
  assert_failure (&busy, 2, "--resume");
  result_clear (&busy);

  Result r = run (clip, out, "--resume", "--jobs", "1", "--workdir", work,
      "--keep-workdir", "--json", NULL);
  assert_success (&r);
  JsonParser *keep = NULL;
  JsonObject *start = find_event (r.out, "start", &keep);
  g_assert_nonnull (start);
  g_assert_cmpint (json_object_get_int_member (start, "redone"), ==,
      g_hash_table_size (was_running));
  g_assert_cmpint (json_object_get_int_member (start, "reused"), ==,
      g_hash_table_size (was_done));
  g_object_unref (keep);
  result_clear (&r);

  /* attempts: 2 for the segments killed in progress, 1 for the others */
  g_autoptr (JsonParser) mp = NULL;
  JsonArray *segs = manifest_segments (load_manifest (work, &mp));
  for (guint i = 0; i < json_array_get_length (segs); i++) {
    JsonObject *s = json_array_get_object_element (segs, i);
    g_assert_cmpstr (json_object_get_string_member (s, "state"), ==, "done");
    g_assert_cmpint (json_object_get_int_member (s, "attempts"), ==,
        g_hash_table_contains (was_running, GUINT_TO_POINTER (i)) ? 2 : 1);
  }
  /* no temporary files of the killed worker left behind */
  g_autofree gchar *segdir = g_build_filename (work, "segments", NULL);
  g_autoptr (GDir) d = g_dir_open (segdir, 0, NULL);
  const gchar *name;
  while ((name = g_dir_read_name (d)))
    g_assert_null (strstr (name, ".part-"));

  assert_same_frames (single_out, out);
  assert_check_ok (clip, out);
}

/* The job's tiles: settings.tile-width/height, and every segment's. */
static void
assert_job_tiles (const gchar * work, gint * tile_width, gint * tile_height,
    const gchar * origin)
{
  g_autoptr (JsonParser) mp = NULL;
  JsonObject *m = load_manifest (work, &mp);
  JsonObject *st = json_object_get_object_member (m, "settings");
  *tile_width = json_object_get_int_member (st, "tile-width");
  *tile_height = json_object_get_int_member (st, "tile-height");
  g_assert_cmpint (*tile_width, >, 0);
  g_assert_cmpint (*tile_height, >, 0);
  if (origin)
    g_assert_cmpstr (json_object_get_string_member (st, "tile-origin"), ==,
        origin);
  JsonArray *segs = manifest_segments (m);
  for (guint i = 0; i < json_array_get_length (segs); i++) {
    JsonObject *s = json_array_get_object_element (segs, i);
    g_assert_cmpstr (json_object_get_string_member (s, "state"), ==, "done");
    g_assert_cmpint (json_object_get_int_member (s, "tile-width"), ==,
        *tile_width);
    g_assert_cmpint (json_object_get_int_member (s, "tile-height"), ==,
        *tile_height);
  }
}

/* Makes segments [from, end) of a finished job pending again, as if they
 * had been left to another machine, and removes their files and the
 * output (when given). */
static void
reopen_segments (const gchar * work, const gchar * out, guint from)
{
  g_autoptr (JsonParser) mp = NULL;
  JsonObject *m = load_manifest (work, &mp);
  JsonArray *segs = manifest_segments (m);
  for (guint i = from; i < json_array_get_length (segs); i++) {
    JsonObject *s = json_array_get_object_element (segs, i);
    json_object_set_string_member (s, "state", "pending");
    g_autofree gchar *name = g_strdup_printf ("seg-%05u.mkv", i);
    g_autofree gchar *path = g_build_filename (work, "segments", name, NULL);
    g_assert_cmpint (g_unlink (path), ==, 0);
  }
  json_object_set_boolean_member (m, "joined", FALSE);
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  json_generator_set_root (gen, json_parser_get_root (mp));
  g_autofree gchar *path = g_build_filename (work, "manifest.json", NULL);
  g_autoptr (GError) error = NULL;
  g_assert_true (json_generator_to_file (gen, path, &error));
  g_assert_no_error (error);
  if (out)
    g_assert_cmpint (g_unlink (out), ==, 0);
}

/* Every segment of a job gets the same tiles, whatever memory the machine
 * that does it has: whole-frame and tiled results differ slightly, and
 * segments that differ would show at the cuts.  EHAT_MEMORY_BUDGET_MB
 * stands for the machines' memory. */
static void
test_tiles (void)
{
  g_autofree gchar *out = tmp_path ("tiles.mkv");
  g_autofree gchar *work = tmp_path ("tiles.work");
  g_autofree gchar *whole = tmp_path ("tiles-whole.mkv");

  /* a small machine: ehatsr tiles the 96×64 frames; the first worker's
   * choice becomes the job's and every segment has it */
  g_setenv ("EHAT_MEMORY_BUDGET_MB", "8", TRUE);
  Result r = run (clip, out, "--encoder", "ffv1", "--segment-seconds", "0.5",
      "--jobs", "2", "--workdir", work, "--keep-workdir", "--json", NULL);
  assert_success (&r);
  JsonParser *keep = NULL;
  JsonObject *rep = find_event (r.out, "report", &keep);
  g_assert_nonnull (rep);
  gint rep_w = json_object_get_int_member (rep, "tile-width");
  gint rep_h = json_object_get_int_member (rep, "tile-height");
  g_assert_cmpint (json_object_get_int_member (rep, "tiles-shrunk"), ==, 0);
  g_object_unref (keep);
  result_clear (&r);
  gint tw, th;
  assert_job_tiles (work, &tw, &th, NULL);
  g_assert_cmpint (rep_w, ==, tw);
  g_assert_cmpint (rep_h, ==, th);
  g_assert_true (tw < 96 || th < 64);

  /* a large machine on its own would take whole frames: other pixels */
  g_setenv ("EHAT_MEMORY_BUDGET_MB", "256", TRUE);
  r = run (clip, whole, "--encoder", "ffv1", "--jobs", "1", NULL);
  assert_success (&r);
  result_clear (&r);
  {
    g_autoptr (GArray) fa = decode_frames (out);
    g_autoptr (GArray) fb = decode_frames (whole);
    g_assert_cmpuint (fa->len, ==, fb->len);
    guint differ = 0;
    for (guint i = 0; i < fa->len; i++)
      differ += g_array_index (fa, Frame, i).hash
          != g_array_index (fb, Frame, i).hash;
    g_assert_cmpuint (differ, >, 0);
  }

  /* the same large machine finishing the job keeps the job's tiles */
  g_autofree gchar *first = g_strdup_printf ("%s.first", out);
  g_assert_cmpint (g_rename (out, first), ==, 0);
  reopen_segments (work, NULL, 1);
  r = run (clip, out, "--resume", "--jobs", "2", "--workdir", work,
      "--keep-workdir", NULL);
  assert_success (&r);
  result_clear (&r);
  gint tw2, th2;
  assert_job_tiles (work, &tw2, &th2, NULL);
  g_assert_cmpint (tw2, ==, tw);
  g_assert_cmpint (th2, ==, th);
  assert_same_frames (first, out);

  /* Two workers racing: this one's first frame had other tiles (a still
   * smaller machine) when another worker recorded the job's.  It starts
   * over with the job's: the same frames. */
  g_autofree gchar *raced = tmp_path ("tiles-raced.mkv");
  g_autofree gchar *raced_work = tmp_path ("tiles-raced.work");
  g_autofree gchar *race = g_strdup_printf ("%dx%d", tw, th);
  g_setenv ("EHAT_MEMORY_BUDGET_MB", "2", TRUE);
  g_setenv ("EHAT_REMASTER_TILE_RACE", race, TRUE);
  r = run (clip, raced, "--encoder", "ffv1", "--segment-seconds", "0.5",
      "--jobs", "1", "--workdir", raced_work, "--keep-workdir", NULL);
  g_unsetenv ("EHAT_REMASTER_TILE_RACE");
  assert_success (&r);
  g_assert_nonnull (strstr (r.err, "segment 0: restarting with the job's"));
  result_clear (&r);
  assert_job_tiles (raced_work, &tw2, &th2, "EHAT_REMASTER_TILE_RACE");
  g_assert_cmpint (tw2, ==, tw);
  g_assert_cmpint (th2, ==, th);
  assert_same_frames (first, raced);

  /* --tile-size fixes them from the start; a resume must not change it */
  g_autofree gchar *fixed = tmp_path ("tiles-fixed.mkv");
  g_autofree gchar *fixed_work = tmp_path ("tiles-fixed.work");
  g_autofree gchar *size = g_strdup_printf ("%dx%d", tw, th);
  r = run (clip, fixed, "--encoder", "ffv1", "--segment-seconds", "0.5",
      "--jobs", "2", "--tile-size", size, "--workdir", fixed_work,
      "--keep-workdir", NULL);
  g_unsetenv ("EHAT_MEMORY_BUDGET_MB");
  assert_success (&r);
  g_assert_null (strstr (r.err, "restarting"));
  result_clear (&r);
  assert_job_tiles (fixed_work, &tw2, &th2, "--tile-size");
  g_assert_cmpint (tw2, ==, tw);
  g_assert_cmpint (th2, ==, th);
  assert_same_frames (first, fixed);
  reopen_segments (fixed_work, fixed, 3);
  r = run (clip, fixed, "--resume", "--tile-size", "40", "--workdir",
      fixed_work, NULL);
  g_autofree gchar *refusal = g_strdup_printf ("has tile size %dx%d, not "
      "40x40", tw, th);
  assert_failure (&r, 2, refusal);
  result_clear (&r);

  /* --status tells the job's tiles */
  r = run ("--status", fixed_work, "--json", NULL);
  assert_success (&r);
  g_autoptr (JsonParser) sp = json_parser_new ();
  g_assert_true (json_parser_load_from_data (sp, r.out, -1, NULL));
  JsonObject *so = json_node_get_object (json_parser_get_root (sp));
  g_assert_cmpint (json_object_get_int_member (so, "tile-width"), ==, tw);
  g_assert_cmpint (json_object_get_int_member (so, "tile-height"), ==, th);
  result_clear (&r);

  /* Out of memory at the job's tiles: ehatsr goes on with smaller ones
   * (correct frames first), and the report counts those segments. */
  g_autofree gchar *oom = tmp_path ("tiles-oom.mkv");
  g_setenv ("EHAT_FAULT_ALLOC_LIMIT", "4000000", TRUE);
  r = run (clip, oom, "--encoder", "ffv1", "--segment-seconds", "0.5",
      "--jobs", "2", "--tile-size", "96x64", "--json", NULL);
  g_unsetenv ("EHAT_FAULT_ALLOC_LIMIT");
  assert_success (&r);
  keep = NULL;
  rep = find_event (r.out, "report", &keep);
  g_assert_nonnull (rep);
  g_assert_cmpint (json_object_get_int_member (rep, "tile-width"), ==, 96);
  g_assert_cmpint (json_object_get_int_member (rep, "tiles-shrunk"), ==,
      json_object_get_int_member (rep, "segments"));
  g_object_unref (keep);
  result_clear (&r);
}

/* Variable frame rate: every frame keeps its own time across the cuts. */
static void
test_vfr (void)
{
  g_autofree gchar *in = tmp_path ("vfr.mkv");
  g_autofree gchar *out = tmp_path ("vfr-out.mkv");
  make_clip (in, TRUE, FALSE);
  Result r = run (in, out, "--encoder", "ffv1", "--segment-seconds", "0.4",
      "--jobs", "2", "--json", NULL);
  assert_success (&r);
  JsonParser *keep = NULL;
  JsonObject *rep = find_event (r.out, "report", &keep);
  g_assert_cmpint (json_object_get_int_member (rep, "segments"), >=, 3);
  g_object_unref (keep);
  result_clear (&r);
  assert_check_ok (in, out);
  /* the work directory is gone after a successful run */
  g_autofree gchar *work = g_strconcat (out, ".ehat-work", NULL);
  g_assert_false (g_file_test (work, G_FILE_TEST_EXISTS));
}

/* Open GOPs and B-frames: decode order differs from display order and
 * the first frames after each cut reference the GOP before it. */
static void
test_h264_open_gop (void)
{
  const gchar *need[] = { "x264enc", "avdec_h264" };
  for (guint i = 0; i < G_N_ELEMENTS (need); i++) {
    GstElementFactory *f = gst_element_factory_find (need[i]);
    if (!f) {
      /* gstreamer1.0-plugins-ugly / -libav: tools/setup-debian.sh */
      g_test_fail_printf ("%s missing: run tools/setup-debian.sh", need[i]);
      return;
    }
    gst_object_unref (f);
  }
  g_autofree gchar *in = tmp_path ("h264.mkv");
  g_autofree gchar *one = tmp_path ("h264-one.mkv");
  g_autofree gchar *four = tmp_path ("h264-four.mkv");
  make_clip (in, FALSE, TRUE);
  Result r1 = run (in, one, "--encoder", "ffv1", "--segment-seconds", "100",
      NULL);
  assert_success (&r1);
  result_clear (&r1);
  Result r4 = run (in, four, "--encoder", "ffv1", "--segment-seconds",
      "0.5", "--jobs", "2", "--json", NULL);
  assert_success (&r4);
  JsonParser *keep = NULL;
  JsonObject *rep = find_event (r4.out, "report", &keep);
  g_assert_cmpint (json_object_get_int_member (rep, "segments"), ==, 4);
  g_object_unref (keep);
  result_clear (&r4);
  assert_same_frames (one, four);
  assert_check_ok (in, four);
}

/* ---- Slurm ---- */

static gchar *
status_json (const gchar * work, JsonParser ** keep)
{
  Result r = run ("--status", work, "--json", NULL);
  gchar *state = NULL;
  if (WIFEXITED (r.status) && WEXITSTATUS (r.status) == 0) {
    if (*keep)
      g_object_unref (*keep);
    *keep = json_parser_new ();
    g_assert_true (json_parser_load_from_data (*keep, r.out, -1, NULL));
    JsonObject *o = json_node_get_object (json_parser_get_root (*keep));
    state = g_strdup_printf ("%s/%" G_GINT64_FORMAT "/%" G_GINT64_FORMAT,
        json_object_get_string_member (o, "state"),
        json_object_get_int_member (o, "running"),
        json_object_get_int_member (o, "pending"));
  }
  result_clear (&r);
  return state;
}

/* Polls --status until it reads `want` ("state/running/pending"). */
static gboolean
wait_status (const gchar * work, const gchar * want, gint seconds)
{
  JsonParser *keep = NULL;
  gint64 deadline = g_get_monotonic_time () + seconds * G_TIME_SPAN_SECOND;
  gboolean ok = FALSE;
  while (!ok && g_get_monotonic_time () < deadline) {
    g_autofree gchar *st = status_json (work, &keep);
    ok = !g_strcmp0 (st, want);
    if (!ok)
      g_usleep (500 * 1000);
  }
  if (keep)
    g_object_unref (keep);
  return ok;
}

static void
slurm_down (const gchar * scripts)
{
  g_autofree gchar *down = g_build_filename (scripts, "slurm-down.sh", NULL);
  const gchar *argv[] = { "bash", down, NULL };
  g_spawn_sync (NULL, (gchar **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
      NULL, NULL, NULL, NULL);
}

/* A real single-node Slurm (tests/slurm/slurm-up.sh): the segments as a
 * job array plus an afterok join; one task fails on purpose, the join
 * never starts, --resume --slurm resubmits just that segment and a new
 * join; the result equals the single-process remaster frame for frame. */
static void
test_slurm (void)
{
  const gchar *scripts = g_getenv ("EHAT_SLURM_SCRIPTS");
  g_assert_nonnull (scripts);
  if (!g_getenv ("EHAT_SLURM_DIR"))
    g_setenv ("EHAT_SLURM_DIR", "/tmp/ehat-slurm", TRUE);
  g_autofree gchar *holder = g_strdup_printf ("%d", (int) getpid ());
  g_setenv ("EHAT_SLURM_HOLDER", holder, TRUE);
  g_autofree gchar *up = g_build_filename (scripts, "slurm-up.sh", NULL);
  const gchar *argv[] = { "bash", up, NULL };
  gint status;
  g_autoptr (GError) error = NULL;
  g_spawn_sync (NULL, (gchar **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
      NULL, NULL, &status, &error);
  g_assert_no_error (error);
  if (WIFEXITED (status) && WEXITSTATUS (status) == 77) {
    /* slurm-up.sh said why on stderr */
    slurm_down (scripts);
    g_test_skip ("Slurm cannot be started here");
    return;
  }
  g_assert_true (WIFEXITED (status) && WEXITSTATUS (status) == 0);
  g_autofree gchar *conf = g_build_filename (g_getenv ("EHAT_SLURM_DIR"),
      "etc", "slurm.conf", NULL);
  g_setenv ("SLURM_CONF", conf, TRUE);

  if (!g_file_test (single_out, G_FILE_TEST_EXISTS)) {
    Result r = run (clip, single_out, "--encoder", "ffv1",
        "--segment-seconds", "100", NULL);
    assert_success (&r);
    result_clear (&r);
  }
  g_autofree gchar *out = tmp_path ("slurm.mkv");
  g_autofree gchar *work = tmp_path ("slurm.work");
  g_setenv ("EHAT_REMASTER_FAIL_SEGMENT", "1", TRUE);
  Result r = run (clip, out, "--encoder", "ffv1", "--segment-seconds", "0.5",
      "--workdir", work, "--slurm", "--partition", "debug", "--json", NULL);
  g_unsetenv ("EHAT_REMASTER_FAIL_SEGMENT");
  assert_success (&r);
  JsonParser *keep = NULL;
  JsonObject *sub = find_event (r.out, "submitted", &keep);
  g_assert_nonnull (sub);
  g_assert_cmpint (json_object_get_int_member (sub, "submitted"), ==, 4);
  g_object_unref (keep);
  result_clear (&r);

  /* three segments done, one failed, nothing queued; the join waits */
  gboolean failed = wait_status (work, "failed/0/0", 240);
  g_assert_true (failed);
  g_assert_false (g_file_test (out, G_FILE_TEST_EXISTS));

  keep = NULL;
  r = run (clip, out, "--resume", "--workdir", work, "--slurm",
      "--partition", "debug", "--json", NULL);
  assert_success (&r);
  sub = find_event (r.out, "submitted", &keep);
  g_assert_cmpint (json_object_get_int_member (sub, "submitted"), ==, 1);
  g_object_unref (keep);
  result_clear (&r);

  gboolean complete = wait_status (work, "complete/0/0", 240);
  slurm_down (scripts);
  g_assert_true (complete);
  assert_same_frames (single_out, out);
  assert_check_ok (clip, out);
}

static void
test_errors (void)
{
  g_autofree gchar *out = tmp_path ("err.mkv");
  g_autofree gchar *missing = tmp_path ("no-such-film.mkv");
  g_autofree gchar *junk_model = tmp_path ("junk.safetensors");
  g_autofree gchar *text = tmp_path ("not-a-film.mkv");
  /* an output that exists (its own: the test runs alone under ASan) */
  g_autofree gchar *existing = tmp_path ("existing.mkv");
  g_assert_true (g_file_set_contents (existing, "", 0, NULL));
  g_assert_true (g_file_set_contents (junk_model, "not a model", -1, NULL));
  g_assert_true (g_file_set_contents (text, "hello\n", -1, NULL));
  /* AAC audio, which WebM cannot store, and woven fields, which ehatsr
   * cannot upscale: both refused before any upscaling */
  g_autofree gchar *aac = tmp_path ("aac.mkv");
  g_autofree gchar *webm = tmp_path ("err.webm");
  g_autofree gchar *fields = tmp_path ("interlaced.mkv");
  make_file ("videotestsrc num-buffers=8 ! "
      "video/x-raw,width=32,height=32,framerate=8/1 ! vp8enc deadline=1 ! "
      "mux. audiotestsrc num-buffers=10 ! avenc_aac ! aacparse ! mux. "
      "matroskamux name=mux", aac);
  make_file ("videotestsrc num-buffers=8 ! video/x-raw,width=32,height=32,"
      "framerate=8/1,interlace-mode=interleaved ! x264enc interlaced=true ! "
      "h264parse ! matroskamux", fields);
  /* MPEG-TS, whose video packets are not whole frames */
  g_autofree gchar *ts = tmp_path ("film.ts");
  make_file ("videotestsrc num-buffers=8 ! video/x-raw,width=32,height=32,"
      "framerate=8/1 ! x264enc ! h264parse ! mpegtsmux", ts);

  struct
  {
    const gchar *args[8];
    gint code;
    const gchar *message;
  } cases[] = {
    {{missing, out}, 1, "does not exist"},
    {{clip, out, "--model", junk_model}, 1, "cannot load model"},
    {{clip, out, "--model", missing}, 1, "cannot load model"},
    {{text, out, "--encoder", "ffv1"}, 1, "error"},
    {{clip}, 2, "expected IN and OUT"},
    {{clip, out, "--scale-to", "big"}, 2, "--scale-to"},
    {{clip, out, "--scale-to", "640"}, 2, "--scale-to wants WIDTHxHEIGHT "
          "(e.g. 3840x2160)"},
    {{clip, out, "--tile-size", "0"}, 2, "--tile-size wants WIDTHxHEIGHT or "
          "one size"},
    {{clip, out, "--tile-size", "64x9000"}, 2, "each 1 to 8192"},
    {{clip, out, "--jobs", "-3"}, 2, "--jobs"},
    {{clip, out, "--devices", "0,x"}, 2, "--devices"},
    {{clip, out, "--encoder", "no-such-encoder"}, 2, "unknown encoder"},
    {{clip, out, "--encoder", "vp8", "--quality", "99"}, 2, "out of range"},
    {{clip, out, "--encoder", "ffv1", "--quality", "5"}, 2, "lossless"},
    {{clip, out, "--backend", "tpu"}, 2, "unknown backend"},
    {{clip, out, "--precision", "fp8"}, 2, "unknown precision"},
    {{clip, out, "--ensemble", "3"}, 2, "--ensemble 3: 1, 2, 4 or 8"},
    {{clip, "out.mp4"}, 2, ".mkv"},
    {{ts, out}, 1, "is an MPEG transport stream, whose video packets are "
          "not whole frames"},
    {{fields, out}, 1, "interlaced (interlace-mode=interleaved) and ehatsr "
          "needs progressive frames: deinterlace it first"},
    {{aac, webm, "--encoder", "vp9"}, 1, "webmmux cannot store the input's "
          "audio stream 1 (MPEG-4 AAC, audio/mpeg), so the join would fail "
          "after the upscaling; choose .mkv"},
    {{clip, clip, "--force"}, 2, "must not be the input"},
    {{clip, existing}, 2, "exists"},
    {{"--segment-seconds", "fast", clip, out}, 2, "Cannot parse"},
    {{"--status", tmpdir}, 1, "no manifest"},
    {{"--join", tmpdir}, 1, "no manifest"},
    {{"--worker", tmpdir, "0"}, 1, "no manifest"},
    {{"--worker", tmpdir}, 2, "segment index"},
  };
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
    const gchar **a = cases[i].args;
    Result r = run (a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], NULL);
    g_test_message ("case %u: %s", i, r.err);
    assert_failure (&r, cases[i].code, cases[i].message);
    result_clear (&r);
  }
  /* no work directory is left behind by a job that could not start */
  g_autofree gchar *work = g_strconcat (out, ".ehat-work", NULL);
  g_assert_false (g_file_test (work, G_FILE_TEST_EXISTS));
  g_assert_false (g_file_test (out, G_FILE_TEST_EXISTS));
  g_autofree gchar *webm_work = g_strconcat (webm, ".ehat-work", NULL);
  g_assert_false (g_file_test (webm_work, G_FILE_TEST_EXISTS));
}

int
main (int argc, char **argv)
{
  gst_init (&argc, &argv);
  g_test_init (&argc, &argv, NULL);
  remaster = g_getenv ("EHAT_REMASTER");
  if (!remaster || !g_getenv ("EHATSR_MODEL")) {
    g_printerr ("EHAT_REMASTER and EHATSR_MODEL must be set\n");
    return 1;
  }
  const gchar *need[] = { "videotestsrc", "vp8enc", "vorbisenc", "subparse",
    "matroskamux", "avenc_ffv1", "avenc_aac", "aacparse", "x264enc",
    "x265enc", "mpegtsmux", "avdec_h264"
  };
  for (guint i = 0; i < G_N_ELEMENTS (need); i++) {
    GstElementFactory *f = gst_element_factory_find (need[i]);
    if (!f) {
      /* a missing package is a broken setup, not a reason to skip */
      g_printerr ("GStreamer element %s missing: run tools/setup-debian.sh\n",
          need[i]);
      return 1;
    }
    gst_object_unref (f);
  }
  g_autoptr (GError) error = NULL;
  tmpdir = g_dir_make_tmp ("ehat-remaster-XXXXXX", &error);
  g_assert_no_error (error);
  clip = tmp_path ("clip.mkv");
  single_out = tmp_path ("single.mkv");
  make_clip (clip, FALSE, FALSE);

  g_test_add_func ("/remaster/single", test_single);
  g_test_add_func ("/remaster/segments-frame-exact",
      test_segments_frame_exact);
  g_test_add_func ("/remaster/resume-after-kill", test_resume_after_kill);
  g_test_add_func ("/remaster/ensemble", test_ensemble);
  g_test_add_func ("/remaster/tiles", test_tiles);
  g_test_add_func ("/remaster/vfr", test_vfr);
  g_test_add_func ("/remaster/h264-open-gop", test_h264_open_gop);
  g_test_add_func ("/remaster/errors", test_errors);
  g_test_add_func ("/remaster/hdr", test_hdr);
  g_test_add_func ("/remaster/pro-422", test_pro_422);
  g_test_add_func ("/remaster/track-flags", test_track_flags);
  /* its own meson test (suite slurm): -p /remaster/slurm */
  g_test_add_func ("/remaster/slurm", test_slurm);
  /* its own meson test (suite cuda-emu, two emulated GPUs) */
  if (g_getenv ("EHAT_TEST_REMASTER_CUDA"))
    g_test_add_func ("/remaster/cuda-devices", test_cuda_devices);
  int rc = g_test_run ();

  if (rc == 0) {
    g_autofree gchar *cmd = g_strdup_printf ("rm -rf '%s'", tmpdir);
    (void) system (cmd);
  }
  return rc;
}
