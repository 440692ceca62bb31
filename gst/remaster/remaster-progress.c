/* remaster-progress.c — progress bar, JSON progress lines, final report. */
#include "remaster-progress.h"
#include "remaster-encoder.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct _RemasterProgress
{
  gboolean json;
  gboolean tty;
  gboolean line_open;           /* the bar is on the current line */
  guint64 total;
  guint64 done_before;          /* frames of segments done before this run */
  guint64 done_now;             /* frames of segments finished in this run */
  GHashTable *running;          /* index → frames so far (guint64 in pointer) */
  guint n_segments;
  guint segments_done;
  gint64 start_us;
  gint64 last_show_us;
  gint last_percent;            /* for non-terminal, non-JSON output */
  guint64 *segment_frames;      /* expected frames per segment */
};

gchar *
remaster_json_quote (const gchar * s)
{
  GString *out = g_string_new ("\"");
  for (const gchar * p = s ? s : ""; *p; p++) {
    guchar c = (guchar) * p;
    if (c == '"' || c == '\\')
      g_string_append_printf (out, "\\%c", c);
    else if (c < 0x20)
      g_string_append_printf (out, "\\u%04x", c);
    else
      g_string_append_c (out, (gchar) c);
  }
  g_string_append_c (out, '"');
  return g_string_free (out, FALSE);
}

RemasterProgress *
remaster_progress_new (const RemasterManifest * m, gboolean json)
{
  RemasterProgress *p = g_new0 (RemasterProgress, 1);
  p->json = json;
  p->tty = isatty (STDERR_FILENO);
  p->total = m->frames;
  p->running = g_hash_table_new (NULL, NULL);
  p->n_segments = m->segments->len;
  p->segment_frames = g_new0 (guint64, p->n_segments);
  for (guint i = 0; i < m->segments->len; i++) {
    RemasterSegment *s = g_ptr_array_index (m->segments, i);
    p->segment_frames[i] = s->frames;
    if (s->state == REMASTER_SEGMENT_DONE) {
      p->done_before += s->frames;
      p->segments_done++;
    }
  }
  p->start_us = g_get_monotonic_time ();
  p->last_percent = -1;
  return p;
}

void
remaster_progress_free (RemasterProgress * p)
{
  if (!p)
    return;
  remaster_progress_break_line (p);
  g_hash_table_unref (p->running);
  g_free (p->segment_frames);
  g_free (p);
}

void
remaster_progress_segment_frames (RemasterProgress * p, guint index,
    guint64 frames)
{
  g_hash_table_insert (p->running, GUINT_TO_POINTER (index),
      (gpointer) (guintptr) frames);
}

void
remaster_progress_segment_done (RemasterProgress * p, guint index)
{
  g_hash_table_remove (p->running, GUINT_TO_POINTER (index));
  if (index < p->n_segments)
    p->done_now += p->segment_frames[index];
  p->segments_done++;
}

void
remaster_progress_segment_reset (RemasterProgress * p, guint index)
{
  g_hash_table_remove (p->running, GUINT_TO_POINTER (index));
}

static guint64
frames_this_run (RemasterProgress * p)
{
  guint64 n = p->done_now;
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init (&it, p->running);
  while (g_hash_table_iter_next (&it, &k, &v))
    n += (guint64) (guintptr) v;
  return n;
}

guint64
remaster_progress_frames_done (RemasterProgress * p)
{
  return p->done_before + frames_this_run (p);
}

gdouble
remaster_progress_elapsed (RemasterProgress * p)
{
  return (g_get_monotonic_time () - p->start_us) / 1e6;
}

static void
format_duration (gchar * buf, gsize len, gdouble seconds)
{
  if (!(seconds >= 0) || seconds > 1e8) {
    g_strlcpy (buf, "--:--:--", len);
    return;
  }
  guint64 s = (guint64) (seconds + 0.5);
  g_snprintf (buf, len, "%" G_GUINT64_FORMAT ":%02u:%02u", s / 3600,
      (guint) (s / 60 % 60), (guint) (s % 60));
}

void
remaster_progress_show (RemasterProgress * p, gboolean force)
{
  gint64 now = g_get_monotonic_time ();
  gint64 min_gap = (p->json ? 1000 : 250) * G_TIME_SPAN_MILLISECOND;
  if (!force && now - p->last_show_us < min_gap)
    return;
  p->last_show_us = now;

  guint64 run = frames_this_run (p);
  guint64 done = p->done_before + run;
  gdouble elapsed = (now - p->start_us) / 1e6;
  gdouble fps = elapsed > 0 ? run / elapsed : 0;
  gdouble eta = fps > 0 ? (p->total - MIN (done, p->total)) / fps : -1;

  if (p->json) {
    g_print ("{\"event\":\"progress\",\"frames\":%" G_GUINT64_FORMAT
        ",\"total\":%" G_GUINT64_FORMAT ",\"fps\":%.3f,\"eta\":%.1f,"
        "\"elapsed\":%.1f,\"segments-done\":%u,\"segments\":%u}\n", done,
        p->total, fps, eta, elapsed, p->segments_done, p->n_segments);
    fflush (stdout);
    return;
  }
  gint percent = p->total ? (gint) (100 * done / p->total) : 100;
  gchar eta_s[32], el_s[32];
  format_duration (eta_s, sizeof eta_s, eta);
  format_duration (el_s, sizeof el_s, elapsed);
  if (p->tty) {
    const gint width = 30;
    gint fill = p->total ? (gint) (width * done / p->total) : width;
    gchar bar[64];
    for (gint i = 0; i < width; i++)
      bar[i] = i < fill ? '#' : '-';
    bar[width] = 0;
    fprintf (stderr, "\r[%s] %3d%% %" G_GUINT64_FORMAT "/%" G_GUINT64_FORMAT
        " frames  %.2f fps  ETA %s  segments %u/%u\033[K", bar, percent, done,
        p->total, fps, eta_s, p->segments_done, p->n_segments);
    p->line_open = TRUE;
  } else if (force || percent / 10 != p->last_percent / 10) {
    /* Logs get a line per 10 %, not a flood of carriage returns. */
    fprintf (stderr, "%3d%% %" G_GUINT64_FORMAT "/%" G_GUINT64_FORMAT
        " frames  %.2f fps  elapsed %s  ETA %s  segments %u/%u\n", percent,
        done, p->total, fps, el_s, eta_s, p->segments_done, p->n_segments);
    p->last_percent = percent;
  }
  fflush (stderr);
}

void
remaster_progress_break_line (RemasterProgress * p)
{
  if (p->line_open) {
    fputc ('\n', stderr);
    fflush (stderr);
    p->line_open = FALSE;
  }
}

void
remaster_progress_event (RemasterProgress * p, const gchar * event,
    const gchar * fields)
{
  if (!p->json)
    return;
  g_print ("{\"event\":\"%s\"%s%s}\n", event, fields ? "," : "",
      fields ? fields : "");
  fflush (stdout);
}

void
remaster_progress_report (RemasterProgress * p, const RemasterManifest * m,
    const RemasterReport * r)
{
  remaster_progress_break_line (p);
  const RemasterSettings *st = &m->settings;
  gdouble elapsed = remaster_progress_elapsed (p);
  guint64 dropped = m->frames > r->frames_out ? m->frames - r->frames_out : 0;
  g_autofree gchar *enc = remaster_encoder_describe (st->encoder, st->quality);
  /* backends the segments actually ran on */
  g_autoptr (GString) backends = g_string_new (NULL);
  for (guint i = 0; i < m->segments->len; i++) {
    RemasterSegment *s = g_ptr_array_index (m->segments, i);
    if (s->backend && !strstr (backends->str, s->backend))
      g_string_append_printf (backends, "%s%s", backends->len ? "," : "",
          s->backend);
  }
  guint64 run_frames = frames_this_run (p);
  gdouble fps = elapsed > 0 ? run_frames / elapsed : 0;
  /* segments that ran out of memory at the job's tiles and went on with
   * smaller ones: their frames may differ slightly from the others' */
  guint shrunk = 0;
  for (guint i = 0; i < m->segments->len; i++) {
    RemasterSegment *s = g_ptr_array_index (m->segments, i);
    shrunk += s->tile_width && (s->tile_width != st->tile_width
        || s->tile_height != st->tile_height);
  }

  if (p->json) {
    g_autofree gchar *qin = remaster_json_quote (m->input);
    g_autofree gchar *qout = remaster_json_quote (m->output);
    g_autofree gchar *qmodel = remaster_json_quote (st->model);
    g_autofree gchar *qenc = remaster_json_quote (enc);
    g_autofree gchar *qbk = remaster_json_quote (backends->str);
    g_autofree gchar *qdev = r->devices ? remaster_json_quote (r->devices) :
        g_strdup ("null");
    g_print ("{\"event\":\"report\",\"input\":%s,\"output\":%s,"
        "\"frames-in\":%" G_GUINT64_FORMAT ",\"frames-out\":%"
        G_GUINT64_FORMAT ",\"dropped\":%" G_GUINT64_FORMAT ",\"seconds\":%.3f,"
        "\"fps\":%.3f,\"model\":%s,\"scale\":%d,\"backend\":%s,\"precision\":\"%s\","
        "\"ensemble\":%d,"
        "\"encoder\":%s,"
        "\"quality\":%d,\"width-in\":%d,\"height-in\":%d,\"width-out\":%d,"
        "\"height-out\":%d,\"segments\":%u,\"segment-seconds\":%g,"
        "\"reused\":%u,\"redone\":%u,\"jobs\":%u,\"devices\":%s,"
        "\"audio-streams\":%u,\"subtitle-streams\":%u,\"output-bytes\":%"
        G_GUINT64_FORMAT ",\"skipped-undecodable\":%" G_GUINT64_FORMAT ","
        "\"tile-width\":%d,\"tile-height\":%d,\"tiles-shrunk\":%u,"
        "\"join-seconds\":%.3f}\n", qin, qout, m->frames, r->frames_out, dropped,
        elapsed, fps, qmodel, st->scale, qbk,
        st->precision ? st->precision : "auto", st->ensemble, qenc,
        st->quality, m->width,
        m->height, r->out_width, r->out_height, m->segments->len,
        st->segment_seconds, r->reused, r->redone, r->jobs, qdev, m->n_audio,
        m->n_subtitle, r->output_bytes, m->skipped, st->tile_width,
        st->tile_height, shrunk, r->join_seconds);
    fflush (stdout);
    return;
  }
  gchar el_s[32], ensemble_note[32];
  format_duration (el_s, sizeof el_s, elapsed);
  g_snprintf (ensemble_note, sizeof ensemble_note, ", ensemble %d",
      st->ensemble);
  g_print ("ehat-remaster: %s -> %s\n", m->input, m->output);
  g_print ("  frames      in %" G_GUINT64_FORMAT ", out %" G_GUINT64_FORMAT
      ", dropped %" G_GUINT64_FORMAT "\n", m->frames, r->frames_out, dropped);
  if (m->skipped)
    g_print ("              (%" G_GUINT64_FORMAT " more before the first "
        "keyframe: undecodable, left out)\n", m->skipped);
  g_print ("  time        %s (%.1f s, %.2f fps over %" G_GUINT64_FORMAT
      " frames processed in this run)\n", el_s, elapsed, fps, run_frames);
  g_print ("  model       %s (x%d, backend %s, precision %s%s)\n",
      st->model, st->scale, backends->len ? backends->str : st->backend,
      st->precision ? st->precision : "auto", st->ensemble > 1 ?
      ensemble_note : "");
  g_print ("  video       %dx%d -> %dx%d, encoder %s\n", m->width, m->height,
      r->out_width, r->out_height, enc);
  if (st->tile_width)
    g_print ("  tiles       %dx%d input pixels (from %s)\n",
        st->tile_width, st->tile_height, st->tile_origin ?
        st->tile_origin : "?");
  if (shrunk)
    g_print ("              %u segment%s ran out of memory and finished on "
        "smaller tiles: %s frames may differ slightly from the others'\n",
        shrunk, shrunk == 1 ? "" : "s", shrunk == 1 ? "its" : "their");
  if (r->jobs)
    g_print ("  segments    %u of ~%g s, %u job%s%s%s; %u reused, %u redone\n",
        m->segments->len, st->segment_seconds, r->jobs, r->jobs > 1 ? "s" : "",
        r->devices ? ", devices " : "", r->devices ? r->devices : "",
        r->reused, r->redone);
  else
    g_print ("  segments    %u of ~%g s, joined from %s\n", m->segments->len,
        st->segment_seconds, "the work directory");
  g_print ("  copied      %u audio, %u subtitle streams\n", m->n_audio,
      m->n_subtitle);
  g_print ("  output      %" G_GUINT64_FORMAT " bytes\n", r->output_bytes);
}
