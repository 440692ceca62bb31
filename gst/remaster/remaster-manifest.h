/* remaster-manifest.h — the work directory's manifest (manifest.json).
 *
 * The manifest is the single source of truth about a remaster job: what
 * the input is, the settings, how the video is cut into segments and the
 * state of each segment.  Every process that takes part (the local driver,
 * workers on this or another node, a Slurm join job, --status) reads it;
 * changes go through remaster_manifest_update(), which re-reads the file
 * under the lock, applies the change and writes it back atomically, so
 * concurrent workers never lose each other's updates and a kill -9 at any
 * point leaves either the old or the new manifest, never a torn one. */
#ifndef REMASTER_MANIFEST_H
#define REMASTER_MANIFEST_H

#include <gst/gst.h>

G_BEGIN_DECLS

#define REMASTER_MANIFEST_FORMAT "ehat-remaster/1"

typedef enum
{
  REMASTER_SEGMENT_PENDING,
  REMASTER_SEGMENT_RUNNING,
  REMASTER_SEGMENT_DONE,
  REMASTER_SEGMENT_FAILED,
} RemasterSegmentState;

const gchar *remaster_segment_state_name (RemasterSegmentState state);

typedef struct
{
  guint index;
  /* Presentation-time range [start, end) of the input's frames that this
   * segment owns.  start is the PTS of a keyframe (the worker seeks there);
   * GST_CLOCK_TIME_NONE for segment 0 (from the first frame) and for the
   * end of the last segment (to the last frame). */
  GstClockTime start;
  GstClockTime end;
  guint64 frames;               /* input frames in the range (from the probe) */

  RemasterSegmentState state;
  guint attempts;               /* times a worker started on it */
  guint64 frames_out;           /* encoded frames in the segment file */
  guint64 bytes;                /* size of the segment file */
  gdouble seconds;              /* wall time of the successful attempt */
  gdouble setup_seconds;        /* of it, worker start to first frame */
  gchar *host;                  /* last worker: host and pid */
  gint64 pid;
  gchar *backend;               /* "cpu" / "cuda" as ehatsr reported */
  gint tile_width;              /* tiles of its last frame (input pixels); */
  gint tile_height;             /* smaller than the job's after an OOM */
  gchar *error;                 /* last failure, or NULL */
} RemasterSegment;

typedef struct
{
  gchar *model;                 /* absolute path of the model file */
  gint scale;                   /* the model's scale */
  gchar *backend;               /* ehatsr backend: auto, cuda, cpu */
  gchar *precision;             /* ehatsr precision: auto, fp32, fp16, bf16 */
  gint ensemble;                /* ehatsr self-ensemble: 1, 2, 4 or 8 */
  gchar *encoder;               /* --encoder name */
  gint quality;                 /* -1: the encoder's default */
  gint scale_to_width;          /* 0: the model's scale only */
  gint scale_to_height;
  gdouble segment_seconds;
  /* The tile geometry every segment uses (input pixels), so that segments
   * done on different machines match: whole frame against tiles, or other
   * tiles, agree only to about 45 dB, not bit for bit.  From --tile-size,
   * else recorded by the first worker that upscaled a frame (ehatsr's
   * automatic choice there); 0×0 until then. */
  gint tile_width;
  gint tile_height;
  gchar *tile_origin;           /* "--tile-size", "segment N", or NULL */
} RemasterSettings;

typedef struct
{
  gchar *input;                 /* absolute paths */
  gchar *output;
  gint64 input_size;            /* to refuse resuming on a changed input */
  gint64 input_mtime;
  RemasterSettings settings;

  /* the video stream, as demuxed */
  gchar *video_caps;
  gint width;
  gint height;
  gint fps_n;                   /* nominal; 0/1 when unknown */
  gint fps_d;
  guint64 frames;               /* frames the output will have */
  guint64 skipped;              /* undecodable, before the first keyframe */
  GstClockTime duration;
  guint n_audio;                /* streams copied by the join */
  guint n_subtitle;

  GPtrArray *segments;          /* RemasterSegment* */

  gboolean joined;
  gchar *slurm_array_job;       /* job ids of the last --slurm submission */
  gchar *slurm_join_job;
} RemasterManifest;

RemasterManifest *remaster_manifest_new (void);
void remaster_manifest_free (RemasterManifest * manifest);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (RemasterManifest, remaster_manifest_free)

RemasterSegment *remaster_manifest_get_segment (RemasterManifest * manifest,
    guint index);

/* WORKDIR/manifest.json, WORKDIR/manifest.lock, WORKDIR/segments/seg-NNNNN.mkv */
gchar *remaster_manifest_path (const gchar * workdir);
gchar *remaster_manifest_lock_path (const gchar * workdir);
gchar *remaster_manifest_segment_path (const gchar * workdir, guint index);

gboolean remaster_manifest_exists (const gchar * workdir);
RemasterManifest *remaster_manifest_load (const gchar * workdir,
    GError ** error);
/* Atomic (temporary file + rename); callers that may race with others use
 * remaster_manifest_update() instead. */
gboolean remaster_manifest_save (const RemasterManifest * manifest,
    const gchar * workdir, GError ** error);

/* Under WORKDIR/manifest.lock: load, call `func`, save if it returned TRUE.
 * `func` returns FALSE with `error` set to abandon the change. */
typedef gboolean (*RemasterManifestFunc) (RemasterManifest * manifest,
    gpointer user_data, GError ** error);
gboolean remaster_manifest_update (const gchar * workdir,
    RemasterManifestFunc func, gpointer user_data, GError ** error);

/* Sums over the segments. */
guint remaster_manifest_count_state (const RemasterManifest * manifest,
    RemasterSegmentState state);
guint64 remaster_manifest_frames_done (const RemasterManifest * manifest);

G_END_DECLS

#endif
