/* remaster-status.c — progress of a job, read from the work directory. */
#include "remaster-status.h"
#include "remaster-manifest.h"
#include "remaster-progress.h"
#include "remaster-slurm.h"

#include <stdlib.h>

/* Frames done so far by a running segment, from the file its worker
 * rewrites every few seconds (0 when there is none yet). */
static guint64
running_frames (const gchar * workdir, guint index)
{
  g_autofree gchar *seg = remaster_manifest_segment_path (workdir, index);
  g_autofree gchar *path = g_strconcat (seg, ".progress", NULL);
  g_autofree gchar *text = NULL;
  if (!g_file_get_contents (path, &text, NULL, NULL))
    return 0;
  return g_ascii_strtoull (text, NULL, 10);
}

gboolean
remaster_status_print (const gchar * workdir, gboolean json, GError ** error)
{
  g_autoptr (RemasterManifest) m = remaster_manifest_load (workdir, error);
  if (!m)
    return FALSE;
  guint n = m->segments->len;
  guint count[4] = { 0 };
  /* A segment marked running whose Slurm task is gone was interrupted
   * (cancelled, node lost, time limit): --resume resubmits it. */
  g_autoptr (GHashTable) queued = m->slurm_array_job ?
      remaster_slurm_queued_indices (m->slurm_array_job) : NULL;
  guint lost = 0;
  guint64 frames = 0;
  for (guint i = 0; i < n; i++) {
    RemasterSegment *s = g_ptr_array_index (m->segments, i);
    count[s->state]++;
    if (s->state == REMASTER_SEGMENT_DONE)
      frames += s->frames;
    else if (s->state == REMASTER_SEGMENT_RUNNING)
      frames += MIN (running_frames (workdir, i), s->frames);
    if (s->state == REMASTER_SEGMENT_RUNNING && queued
        && !g_hash_table_contains (queued, GUINT_TO_POINTER (i)))
      lost++;
  }
  const gchar *overall = m->joined ? "complete" :
      count[REMASTER_SEGMENT_FAILED] || lost ? "failed" :
      count[REMASTER_SEGMENT_DONE] == n ? "joining" :
      count[REMASTER_SEGMENT_RUNNING] ? "running" : "pending";

  if (json) {
    g_autofree gchar *qin = remaster_json_quote (m->input);
    g_autofree gchar *qout = remaster_json_quote (m->output);
    GString *segs = g_string_new ("[");
    for (guint i = 0; i < n; i++) {
      RemasterSegment *s = g_ptr_array_index (m->segments, i);
      g_autofree gchar *qerr = s->error ? remaster_json_quote (s->error) :
          g_strdup ("null");
      g_autofree gchar *qhost = s->host ? remaster_json_quote (s->host) :
          g_strdup ("null");
      gboolean is_lost = s->state == REMASTER_SEGMENT_RUNNING && queued
          && !g_hash_table_contains (queued, GUINT_TO_POINTER (i));
      g_string_append_printf (segs, "%s{\"index\":%u,\"state\":\"%s\","
          "\"frames\":%" G_GUINT64_FORMAT ",\"attempts\":%u,\"host\":%s,"
          "\"pid\":%" G_GINT64_FORMAT ",\"error\":%s}", i ? "," : "", i,
          is_lost ? "lost" : remaster_segment_state_name (s->state),
          s->frames, s->attempts, qhost, s->pid, qerr);
    }
    g_string_append_c (segs, ']');
    g_autofree gchar *qa = m->slurm_array_job ?
        remaster_json_quote (m->slurm_array_job) : g_strdup ("null");
    g_autofree gchar *qj = m->slurm_join_job ?
        remaster_json_quote (m->slurm_join_job) : g_strdup ("null");
    g_print ("{\"state\":\"%s\",\"input\":%s,\"output\":%s,\"frames\":%"
        G_GUINT64_FORMAT ",\"total\":%" G_GUINT64_FORMAT ",\"pending\":%u,"
        "\"running\":%u,\"done\":%u,\"failed\":%u,\"lost\":%u,"
        "\"joined\":%s,\"tile-width\":%d,\"tile-height\":%d,"
        "\"slurm-array-job\":%s,\"slurm-join-job\":%s,\"segments\":%s}\n",
        overall, qin, qout, frames, m->frames, count[0], count[1] - lost,
        count[2], count[3], lost, m->joined ? "true" : "false",
        m->settings.tile_width, m->settings.tile_height, qa, qj, segs->str);
    g_string_free (segs, TRUE);
    return TRUE;
  }
  g_print ("%s -> %s\n", m->input, m->output);
  g_print ("state: %s; frames %" G_GUINT64_FORMAT "/%" G_GUINT64_FORMAT
      " (%.1f%%); segments: %u done, %u running, %u pending, %u failed, "
      "%u interrupted of %u\n", overall, frames, m->frames,
      m->frames ? 100.0 * frames / m->frames : 100.0,
      count[REMASTER_SEGMENT_DONE], count[REMASTER_SEGMENT_RUNNING] - lost,
      count[REMASTER_SEGMENT_PENDING], count[REMASTER_SEGMENT_FAILED], lost,
      n);
  if (m->settings.tile_width)
    g_print ("tiles: %dx%d input pixels (from %s)\n", m->settings.tile_width,
        m->settings.tile_height, m->settings.tile_origin ?
        m->settings.tile_origin : "?");
  else
    g_print ("tiles: automatic, fixed by the first frame upscaled\n");
  if (m->slurm_array_job)
    g_print ("slurm: array job %s, join job %s\n", m->slurm_array_job,
        m->slurm_join_job ? m->slurm_join_job : "-");
  for (guint i = 0; i < n; i++) {
    RemasterSegment *s = g_ptr_array_index (m->segments, i);
    if (s->state == REMASTER_SEGMENT_RUNNING && queued
        && !g_hash_table_contains (queued, GUINT_TO_POINTER (i)))
      g_print ("  segment %u was interrupted on %s (its Slurm task is gone); "
          "--resume --slurm resubmits it\n", i, s->host ? s->host : "?");
    else if (s->state == REMASTER_SEGMENT_RUNNING)
      g_print ("  segment %u running on %s (pid %" G_GINT64_FORMAT "): %"
          G_GUINT64_FORMAT "/%" G_GUINT64_FORMAT " frames, attempt %u\n", i,
          s->host ? s->host : "?", s->pid, running_frames (workdir, i),
          s->frames, s->attempts);
    else if (s->state == REMASTER_SEGMENT_FAILED)
      g_print ("  segment %u failed (attempt %u): %s\n", i, s->attempts,
          s->error ? s->error : "?");
  }
  return TRUE;
}
