/* remaster-progress.h — what the user sees while a film is remastered:
 * a progress bar on the terminal (frames done/total, fps, ETA), or with
 * --json one JSON object per line on stdout for machines, and the final
 * report (frames in/out, dropped, time, model, settings). */
#ifndef REMASTER_PROGRESS_H
#define REMASTER_PROGRESS_H

#include "remaster-manifest.h"

G_BEGIN_DECLS

typedef struct _RemasterProgress RemasterProgress;

/* Frames of segments already done count as done but not towards the
 * speed: fps and ETA are about this run's work. */
RemasterProgress *remaster_progress_new (const RemasterManifest * manifest,
    gboolean json);
void remaster_progress_free (RemasterProgress * progress);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (RemasterProgress, remaster_progress_free)

/* A running segment's encoded frames so far. */
void remaster_progress_segment_frames (RemasterProgress * progress,
    guint index, guint64 frames);
void remaster_progress_segment_done (RemasterProgress * progress, guint index);
/* A segment whose attempt failed or was interrupted: its frames no longer
 * count. */
void remaster_progress_segment_reset (RemasterProgress * progress,
    guint index);
/* Prints at most every 0.25 s (bar) / 1 s (JSON) unless forced. */
void remaster_progress_show (RemasterProgress * progress, gboolean force);
/* Ends the bar's line before other output goes to the terminal. */
void remaster_progress_break_line (RemasterProgress * progress);
/* A JSON event line (--json) such as {"event":"join"}: `fields` are
 * already-formatted JSON members, or NULL. */
void remaster_progress_event (RemasterProgress * progress,
    const gchar * event, const gchar * fields);

guint64 remaster_progress_frames_done (RemasterProgress * progress);
gdouble remaster_progress_elapsed (RemasterProgress * progress);

typedef struct
{
  guint64 frames_out;           /* video frames in the output (join count) */
  guint64 output_bytes;
  guint jobs;
  const gchar *devices;         /* as given, or NULL */
  guint redone;                 /* in-progress segments redone by --resume */
  guint reused;                 /* segments already done before this run */
  gint out_width;
  gint out_height;
  gdouble join_seconds;
} RemasterReport;

void remaster_progress_report (RemasterProgress * progress,
    const RemasterManifest * manifest, const RemasterReport * report);

/* JSON string literal for `s` (with quotes), for hand-built lines. */
gchar *remaster_json_quote (const gchar * s);

G_END_DECLS

#endif
