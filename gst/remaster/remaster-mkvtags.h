/* remaster-mkvtags.h — free-form global tags into finished Matroska files. */
#ifndef REMASTER_MKVTAGS_H
#define REMASTER_MKVTAGS_H

#include <gst/gst.h>

G_BEGIN_DECLS

/* Appends the "NAME=value" (or "NAME[lang]=value") entries of the
 * extended-comment tag of `tags` to the Matroska/WebM file at `path` as one
 * more global Tag, skipping those the file's global tags already hold.
 * `added` (may be NULL): how many were written.  A file whose layout is not
 * the one matroskamux writes is left untouched and reported as an error. */
gboolean remaster_mkv_add_tags (const gchar * path, const GstTagList * tags,
    guint * added, GError ** error);

G_END_DECLS

#endif
