/* remaster-check.h — ehat-remaster --check IN OUT: does OUT hold what a
 * remaster of IN must hold?  The same number of video frames at the same
 * presentation times, every audio and subtitle packet of IN unchanged
 * (time and bytes), the chapters and global tags.  Times compare equal
 * within half a millisecond: Matroska stores milliseconds.  Reads both
 * files without decoding. */
#ifndef REMASTER_CHECK_H
#define REMASTER_CHECK_H

#include <glib.h>

G_BEGIN_DECLS

/* TRUE when OUT matches; differences are printed (one line each, or one
 * JSON object with --json).  FALSE with `error` set when a file cannot be
 * read; FALSE without error when they differ. */
gboolean remaster_check_files (const gchar * input, const gchar * output,
    gboolean json, GError ** error);

G_END_DECLS

#endif
