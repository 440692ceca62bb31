/* Backend modules: the CUDA backend is loaded on demand (GModule).
 *
 * libehat links no CUDA library: the CUDA backend and its kernels are a
 * shared module, libehat-cuda.so (kernels/), installed in $libdir/ehat-1
 * (EHAT_BACKEND_DIR) and found in the build tree through EHAT_BACKEND_PATH
 * (set by the tests and by `meson devenv`).  Linking cuBLAS/cuBLASLt and
 * cudart into libehat cost every process ≈ 195 MiB of RSS, CPU users
 * included (`ehat bench --backend cpu`: 226 MiB, now 30 MiB); now only a
 * process that asks for CUDA (backend=cuda, or backend=auto on a machine
 * with a CUDA driver and device) maps them.
 *
 * The contract (ehat-backend.h): one exported symbol,
 * EHAT_BACKEND_MODULE_ENTRY, returning an EhatBackendModule whose
 * abi_version and ops_size must equal ours, so that a stale module (an old
 * install, a module of another libehat version) is refused by name instead
 * of calling through a mismatched operations table.
 *
 * How the module calls back into libehat: it is linked against libehat
 * (DT_NEEDED libehat.so.0), like a GStreamer plugin against libgstreamer,
 * rather than given a function table.  What it uses (EHAT_ERROR today) is
 * then ordinary API, resolved by the dynamic linker to the libehat already
 * loaded in the process (same soname, one copy), and no table has to be
 * kept in step with what the module happens to call; the ABI version
 * covers those functions too.  The module is built with hidden visibility
 * and exports only its entry, so nothing of it can interpose on libehat.
 *
 * Outcomes are kept per process (g_once): a module is never unloaded (CUDA
 * libraries do not support it, and backends hold pointers into it), and a
 * failure is not retried on every engine. */
#include "ehat-backend.h"

#include <gmodule.h>
#include <string.h>

#ifndef EHAT_BACKEND_DIR
#define EHAT_BACKEND_DIR "/usr/local/lib/ehat-1"
#endif

static char **
search_dirs (const char *path)
{
  char **dirs = g_strsplit (path, G_SEARCHPATH_SEPARATOR_S, -1);
  int n = 0;

  /* drop empty entries */
  for (int i = 0; dirs[i]; i++) {
    if (*dirs[i])
      dirs[n++] = dirs[i];
    else
      g_free (dirs[i]);
  }
  dirs[n] = NULL;
  return dirs;
}

const EhatBackendModule *
ehat_backend_module_load (const char *name, GError **error)
{
  return ehat_backend_module_load_from (name, NULL, error);
}

const EhatBackendModule *
ehat_backend_module_load_from (const char *name, const char *search_path,
    GError **error)
{
  const char *env = search_path ? NULL : g_getenv ("EHAT_BACKEND_PATH");
  g_autofree char *file = NULL, *path = NULL, *upper = NULL;
  g_auto (GStrv) dirs = NULL;
  const char *why;
  GModule *module;
  gpointer sym = NULL;
  const EhatBackendModule *m;

  g_return_val_if_fail (name != NULL, NULL);
  file = g_strdup_printf ("libehat-%s.%s", name, G_MODULE_SUFFIX);
  upper = g_ascii_strup (name, -1);
  dirs = search_dirs (search_path ? search_path : env ? env
      : EHAT_BACKEND_DIR);
  if (!g_module_supported ()) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_UNSUPPORTED,
        "cannot load the %s backend module: no dynamic loading here", upper);
    return NULL;
  }
  for (int i = 0; dirs[i] && !path; i++) {
    char *p = g_build_filename (dirs[i], file, NULL);
    if (g_file_test (p, G_FILE_TEST_EXISTS))
      path = p;
    else
      g_free (p);
  }
  if (!path) {
    g_autofree char *list = g_strjoinv (G_SEARCHPATH_SEPARATOR_S, dirs);
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_UNSUPPORTED,
        "the %s backend module %s was not found (searched %s%s%s)", upper,
        file, env ? "EHAT_BACKEND_PATH=" : "", *list ? list : "nothing",
        env || search_path ? "" : "; EHAT_BACKEND_PATH overrides");
    return NULL;
  }
  /* Immediate binding: a missing CUDA library or symbol fails here, with
   * the dynamic linker's message, not later inside an operation.  Local:
   * its symbols (cuBLAS's among them) stay out of the global scope. */
  module = g_module_open (path, G_MODULE_BIND_LOCAL);
  if (!module) {
    /* dlerror() names the file first when the file itself is the problem */
    why = g_module_error ();
    if (g_str_has_prefix (why, path) && g_str_has_prefix (why + strlen (path),
            ": "))
      why += strlen (path) + 2;
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_BACKEND,
        "cannot load the %s backend module %s: %s", upper, path, why);
    return NULL;
  }
  if (!g_module_symbol (module, EHAT_BACKEND_MODULE_ENTRY, &sym) || !sym) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_BACKEND,
        "%s is not an ehat backend module (no symbol %s)", path,
        EHAT_BACKEND_MODULE_ENTRY);
    g_module_close (module);
    return NULL;
  }
  m = ((EhatBackendModuleEntry) sym) ();
  if (!m || m->abi_version != EHAT_BACKEND_ABI_VERSION
      || m->ops_size != sizeof (EhatBackendOps)) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_BACKEND,
        "the %s backend module %s is incompatible with this libehat (module "
        "ABI %u with %u-byte operations, libehat ABI %u with %zu): rebuild "
        "or reinstall it with this version of libehat", upper, path,
        m ? m->abi_version : 0, m ? m->ops_size : 0,
        EHAT_BACKEND_ABI_VERSION, sizeof (EhatBackendOps));
    g_module_close (module);
    return NULL;
  }
  if (!m->name || strcmp (m->name, name) != 0 || !m->create) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_BACKEND,
        "%s is not the %s backend (it says \"%s\")", path, upper,
        m->name ? m->name : "(none)");
    g_module_close (module);
    return NULL;
  }
  g_module_make_resident (module);
  g_debug ("backend module %s loaded", path);
  return m;
}

#ifdef EHAT_HAVE_CUDA

/* A kept outcome: the module's table, or the error to repeat. */
typedef struct
{
  const EhatBackendModule *module;
  gboolean ok;
  int code;
  char *message;
} Outcome;

static Outcome *
outcome_new (gboolean ok, const GError *error)
{
  Outcome *o = g_new0 (Outcome, 1);
  o->ok = ok;
  if (error) {
    o->code = error->code;
    o->message = g_strdup (error->message);
  }
  return o;
}

static gboolean
outcome_report (const Outcome *o, GError **error)
{
  if (!o->ok)
    g_set_error_literal (error, EHAT_ERROR, o->code, o->message);
  return o->ok;
}

/* The CUDA driver API, resolved by hand (cuda.h is not needed). */
typedef int (*CuInit) (unsigned flags);
typedef int (*CuDeviceGetCount) (int *count);
typedef int (*CuGetErrorName) (int result, const char **name);

static Outcome *
probe_driver (void)
{
  g_autoptr (GError) error = NULL;
  GModule *cuda = g_module_open ("libcuda.so.1",
      G_MODULE_BIND_LAZY | G_MODULE_BIND_LOCAL);
  gpointer init = NULL, count_fn = NULL, name_fn = NULL;
  const char *what = NULL;
  int r, count = 0;

  if (!cuda) {
    g_set_error (&error, EHAT_ERROR, EHAT_ERROR_UNSUPPORTED,
        "no CUDA driver (%s)", g_module_error ());
    return outcome_new (FALSE, error);
  }
  if (!g_module_symbol (cuda, "cuInit", &init)
      || !g_module_symbol (cuda, "cuDeviceGetCount", &count_fn)) {
    g_set_error (&error, EHAT_ERROR, EHAT_ERROR_UNSUPPORTED,
        "unusable CUDA driver (%s)", g_module_error ());
    g_module_close (cuda);
    return outcome_new (FALSE, error);
  }
  /* cuInit cannot be undone: the driver stays loaded, as cudart would
   * keep it */
  g_module_make_resident (cuda);
  r = ((CuInit) init) (0);
  if (r == 0)
    r = ((CuDeviceGetCount) count_fn) (&count);
  if (r != 0 || count < 1) {
    if (r != 0 && g_module_symbol (cuda, "cuGetErrorName", &name_fn)
        && ((CuGetErrorName) name_fn) (r, &what) != 0)
      what = NULL;
    if (r == 0)
      g_set_error_literal (&error, EHAT_ERROR, EHAT_ERROR_UNSUPPORTED,
          "no CUDA device (none found)");
    else if (what)
      g_set_error (&error, EHAT_ERROR, EHAT_ERROR_UNSUPPORTED,
          "no CUDA device (cuInit: %s)", what);
    else
      g_set_error (&error, EHAT_ERROR, EHAT_ERROR_UNSUPPORTED,
          "no CUDA device (cuInit: CUDA driver error %d)", r);
    return outcome_new (FALSE, error);
  }
  return outcome_new (TRUE, NULL);
}

gboolean
ehat_cuda_driver_probe (GError **error)
{
  static Outcome *driver;

  if (g_once_init_enter (&driver))
    g_once_init_leave (&driver, probe_driver ());
  return outcome_report (driver, error);
}

static const EhatBackendModule *
cuda_module (GError **error)
{
  static Outcome *cuda;

  if (g_once_init_enter (&cuda)) {
    g_autoptr (GError) e = NULL;
    const EhatBackendModule *m = ehat_backend_module_load ("cuda", &e);
    Outcome *o = outcome_new (m != NULL, e);
    o->module = m;
    g_once_init_leave (&cuda, o);
  }
  return outcome_report (cuda, error) ? cuda->module : NULL;
}

EhatBackend *
ehat_backend_cuda_new (int device_id, EhatPrecision precision,
    gboolean probe, GError **error)
{
  const EhatBackendModule *m;

  if (probe && !ehat_cuda_driver_probe (error))
    return NULL;
  m = cuda_module (error);
  return m ? m->create (device_id, precision, error) : NULL;
}

#else /* !EHAT_HAVE_CUDA */

gboolean
ehat_cuda_driver_probe (GError **error)
{
  g_set_error_literal (error, EHAT_ERROR, EHAT_ERROR_UNSUPPORTED,
      "libehat built without CUDA");
  return FALSE;
}

EhatBackend *
ehat_backend_cuda_new (int device_id, EhatPrecision precision,
    gboolean probe, GError **error)
{
  g_set_error_literal (error, EHAT_ERROR, EHAT_ERROR_UNSUPPORTED,
      "libehat built without CUDA");
  return NULL;
}

#endif
