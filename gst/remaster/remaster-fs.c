/* remaster-fs.c — atomic files and locks for the work directory. */
#include "remaster-fs.h"
#include "remaster-error.h"

#include <errno.h>
#include <string.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

struct _RemasterLock
{
  int fd;
};

gchar *
remaster_fs_temp_name (const gchar * path)
{
  return g_strdup_printf ("%s.part-%s-%d", path, g_get_host_name (),
      (int) getpid ());
}

static gboolean
sync_fd_or_error (int fd, const gchar * path, GError ** error)
{
  /* EINVAL: the file system does not support fsync (some FUSE/tmpfs
   * setups); nothing more can be done there, and it is not an error. */
  if (fsync (fd) != 0 && errno != EINVAL && errno != EROFS) {
    int e = errno;
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_MANIFEST,
        "Cannot sync %s: %s", path, g_strerror (e));
    return FALSE;
  }
  return TRUE;
}

static void
sync_dir_of (const gchar * path)
{
  /* Best effort: a rename is only durable once its directory is synced,
   * but failing to do so is not worth failing the job for. */
  g_autofree gchar *dir = g_path_get_dirname (path);
  int fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    (void) fsync (fd);
    close (fd);
  }
}

gboolean
remaster_fs_sync_file (const gchar * path, GError ** error)
{
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_MANIFEST,
        "Cannot open %s: %s", path, g_strerror (e));
    return FALSE;
  }
  gboolean ok = sync_fd_or_error (fd, path, error);
  close (fd);
  return ok;
}

gboolean
remaster_fs_rename (const gchar * from, const gchar * to, GError ** error)
{
  if (g_rename (from, to) != 0) {
    int e = errno;
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_MANIFEST,
        "Cannot rename %s to %s: %s", from, to, g_strerror (e));
    return FALSE;
  }
  sync_dir_of (to);
  return TRUE;
}

gboolean
remaster_fs_write_atomic (const gchar * path, const gchar * contents,
    gssize length, GError ** error)
{
  g_autofree gchar *tmp = remaster_fs_temp_name (path);
  gsize len = length < 0 ? strlen (contents) : (gsize) length;

  int fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    int e = errno;
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_MANIFEST,
        "Cannot create %s: %s", tmp, g_strerror (e));
    return FALSE;
  }
  gsize done = 0;
  while (done < len) {
    ssize_t n = write (fd, contents + done, len - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      int e = errno;
      g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_MANIFEST,
          "Cannot write %s: %s", tmp, g_strerror (e));
      close (fd);
      g_unlink (tmp);
      return FALSE;
    }
    done += (gsize) n;
  }
  if (!sync_fd_or_error (fd, tmp, error)) {
    close (fd);
    g_unlink (tmp);
    return FALSE;
  }
  close (fd);
  if (!remaster_fs_rename (tmp, path, error)) {
    g_unlink (tmp);
    return FALSE;
  }
  return TRUE;
}

gint64
remaster_fs_file_size (const gchar * path)
{
  GStatBuf st;
  if (g_stat (path, &st) != 0 || !S_ISREG (st.st_mode))
    return -1;
  return (gint64) st.st_size;
}

RemasterLock *
remaster_lock_acquire (const gchar * path, gboolean wait, GError ** error)
{
  int fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    int e = errno;
    g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_MANIFEST,
        "Cannot open lock file %s: %s", path, g_strerror (e));
    return NULL;
  }
  int r;
  do
    r = flock (fd, LOCK_EX | (wait ? 0 : LOCK_NB));
  while (r != 0 && errno == EINTR);
  if (r != 0) {
    int e = errno;
    close (fd);
    if (e == EWOULDBLOCK)
      g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_BUSY,
          "%s is held by another process", path);
    else
      g_set_error (error, REMASTER_ERROR, REMASTER_ERROR_MANIFEST,
          "Cannot lock %s: %s", path, g_strerror (e));
    return NULL;
  }
  RemasterLock *lock = g_new (RemasterLock, 1);
  lock->fd = fd;
  return lock;
}

void
remaster_lock_release (RemasterLock * lock)
{
  if (!lock)
    return;
  /* Closing the descriptor drops the flock. */
  close (lock->fd);
  g_free (lock);
}
