/* Fake backend modules for test-backend-module.c, one source built several
 * times (tests/meson.build) as libehat-<variant>.so:
 *   FAKE_GOOD      a correct module ("fake"): create() returns a CPU
 *                  backend, calling back into libehat as the CUDA module
 *                  does (linked against it)
 *   FAKE_STALE     the entry of a module built for another backend ABI
 *   FAKE_NOSYM     no entry symbol at all
 *   FAKE_MISNAMED  a correct entry naming another backend
 *   FAKE_NEEDSDEP  a correct module needing a library that cannot be found
 *                  (as the CUDA module without libcublas): linked against
 *                  FAKE_DEP_LIB, whose soname names no file
 * They need no CUDA, so the loader's paths are tested in every build. */
#include "ehat-backend.h"

#include <gmodule.h>

#if defined(FAKE_DEP_LIB)

G_MODULE_EXPORT int ehat_fake_dependency (void);

G_MODULE_EXPORT int
ehat_fake_dependency (void)
{
  return 0;
}

#elif !defined(FAKE_NOSYM)

#ifdef FAKE_NEEDSDEP
int ehat_fake_dependency (void);
#endif

static EhatBackend *
fake_create (int device_id, EhatPrecision precision, GError **error)
{
#ifdef FAKE_NEEDSDEP
  device_id += ehat_fake_dependency ();
#endif
  if (device_id != 0) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_UNSUPPORTED,
        "no fake device %d", device_id);
    return NULL;
  }
  return ehat_backend_cpu_new (1, error);
}

static const EhatBackendModule fake_module = {
#ifdef FAKE_STALE
  .abi_version = 42,           /* never a real ABI version */
  .ops_size = sizeof (EhatBackendOps) - sizeof (void *),
#else
  .abi_version = EHAT_BACKEND_ABI_VERSION,
  .ops_size = sizeof (EhatBackendOps),
#endif
#ifdef FAKE_MISNAMED
  .name = "something-else",
#else
  .name = FAKE_NAME,
#endif
  .create = fake_create,
};

G_MODULE_EXPORT const EhatBackendModule *ehat_backend_module_entry (void);

G_MODULE_EXPORT const EhatBackendModule *
ehat_backend_module_entry (void)
{
  return &fake_module;
}

#else

G_MODULE_EXPORT int ehat_not_a_backend (void);

G_MODULE_EXPORT int
ehat_not_a_backend (void)
{
  return 42;
}

#endif
