/* remaster-mkvpatch.h — in-place fixes of finished Matroska files. */
#ifndef REMASTER_MKVPATCH_H
#define REMASTER_MKVPATCH_H

#include <gst/gst.h>
#include <gst/video/video.h>

G_BEGIN_DECLS

/* Appends the "NAME=value" (or "NAME[lang]=value") entries of the
 * extended-comment tag of `tags` to the Matroska/WebM file at `path` as one
 * more global Tag, skipping those the file's global tags already hold.
 * `added` (may be NULL): how many were written.  A file whose layout is not
 * the one matroskamux writes is left untouched and reported as an error. */
gboolean remaster_mkv_add_tags (const gchar * path, const GstTagList * tags,
    guint * added, GError ** error);

/* Appends the files of the "attachment" tag of `tags` (fonts for SSA/ASS
 * subtitles, cover art: matroskademux reports a Matroska file's attachments
 * so, matroskamux does not write them) as an Attachments element at the
 * end of the file, reached through the SeekHead.  Call it after
 * remaster_mkv_add_tags (which needs the Tags element last).  A file that
 * has attachments already is left as it is.  `added` (may be NULL): how many
 * were written. */
gboolean remaster_mkv_add_attachments (const gchar * path,
    const GstTagList * tags, guint * added, GError ** error);

/* Gives the tracks of `output` (written by the join from `input`) the
 * input's track flags — default, forced, enabled, hearing/visually
 * impaired, original, commentary, which matroskamux does not write — and
 * drops the names matroskamux makes up for tracks the input left unnamed.
 * Tracks are matched type by type in order, as the join copies them.  The
 * room comes from rewriting the header (everything before the first
 * Cluster) compactly; nothing after it moves.  An input that is not
 * Matroska has nothing to copy.  `changed`: whether the file was
 * rewritten. */
gboolean remaster_mkv_copy_track_flags (const gchar * input,
    const gchar * output, gboolean * changed, GError ** error);

/* The tracks of a Matroska file, one line each: type and the flags that
 * differ from their absent values ("subtitle default=0 forced=1"); NULL for
 * a file that is not Matroska.  For --check. */
gchar **remaster_mkv_track_flags (const gchar * path);

/* Rewrites the first video track's mastering display luminance (Colour ›
 * MasteringMetadata › LuminanceMax/Min) to `minfo`'s where the file holds
 * matroskamux 1.22's mis-scaled values (a fifth of them); `fixed` tells
 * whether it did.  A file without the metadata, or with other values, is
 * left as it is. */
gboolean remaster_mkv_fix_mastering_luminance (const gchar * path,
    const GstVideoMasteringDisplayInfo * minfo, gboolean * fixed,
    GError ** error);

/* The same for a file made from a video whose caps are `video_caps` (a
 * string; no mastering display in them: nothing to do); a failure is
 * printed as a warning, the file stays usable. */
void remaster_mkv_fix_hdr (const gchar * path, const gchar * video_caps);

G_END_DECLS

#endif
