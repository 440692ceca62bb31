/* remaster-fs.h — the file-system primitives the work directory relies on.
 *
 * The work directory may be on storage shared by several machines (NFS,
 * Lustre, ...), written by workers that can be killed at any instant.  Two
 * rules keep it consistent: a file is never visible under its final name
 * until it is complete (write to a temporary name, fsync, rename), and the
 * manifest is only changed under an exclusive lock (flock, which Linux NFS
 * clients map to POSIX locks that the server arbitrates). */
#ifndef REMASTER_FS_H
#define REMASTER_FS_H

#include <glib.h>

G_BEGIN_DECLS

/* A name for a temporary file beside `path`, unique to this host and
 * process: "<path>.part-<host>-<pid>". */
gchar *remaster_fs_temp_name (const gchar * path);

/* Writes `contents` to `path` atomically: temporary file, fsync, rename,
 * fsync of the directory. */
gboolean remaster_fs_write_atomic (const gchar * path, const gchar * contents,
    gssize length, GError ** error);

/* fsync() of a finished file (before it is renamed into place). */
gboolean remaster_fs_sync_file (const gchar * path, GError ** error);

/* Renames and then makes the rename durable (fsync of the directory). */
gboolean remaster_fs_rename (const gchar * from, const gchar * to,
    GError ** error);

/* Size of a regular file, or -1 when it does not exist / is not one. */
gint64 remaster_fs_file_size (const gchar * path);

typedef struct _RemasterLock RemasterLock;

/* Takes an exclusive flock() on `path` (created if needed).  With `wait`
 * FALSE, fails at once with REMASTER_ERROR_BUSY when someone else holds it.
 * The lock dies with the process, so a kill -9 never leaves it stuck. */
RemasterLock *remaster_lock_acquire (const gchar * path, gboolean wait,
    GError ** error);
void remaster_lock_release (RemasterLock * lock);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (RemasterLock, remaster_lock_release)

G_END_DECLS

#endif
