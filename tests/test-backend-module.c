/* The CUDA backend as a module loaded on demand (ehat-backend-module.c);
 * runs in every build, with or without CUDA, with or without a GPU:
 *
 *  - no-cuda-linked: the `ehat` CLI, libehat.so and the GStreamer plugin
 *    have no CUDA library in their DT_NEEDED (read from the ELF dynamic
 *    section here, no binutils needed); the module, when built, has
 *    libcublas, libcudart and libehat (the parser's positive control);
 *    a CPU engine maps no CUDA library into this process;
 *  - auto / cuda: backend=auto without a usable device runs on the CPU
 *    with exactly the reason this build configuration must give
 *    ("libehat built without CUDA", or the driver probe's "no CUDA
 *    driver (…)" / "no CUDA device (…)"), and maps no cuBLAS when the
 *    probe already said no; backend=cuda fails with a GError saying why;
 *  - loader: fake modules (tests/backend-module-fake.c, no CUDA needed):
 *    a good one loads and calls back into libehat; a stale ABI, a missing
 *    entry symbol, a module of another backend, a module whose library is
 *    missing, a file that is no ELF and an absent module are each refused
 *    by name, without a crash;
 *  - engine-bogus: EHAT_BACKEND_PATH pointing at a directory whose
 *    libehat-cuda.so is garbage or a stale module: backend=cuda reports
 *    the loader's error, backend=auto falls back to the CPU with it (or
 *    with the driver probe's, which comes first), each in a subprocess:
 *    the engine keeps a module's outcome per process.
 *
 * Configuration from tests/meson.build: EHAT_TEST_CUDA_BUILT (1/0),
 * EHAT_TEST_NO_CUDA_BINARIES (paths, G_SEARCHPATH_SEPARATOR),
 * EHAT_TEST_LIBEHAT, EHAT_TEST_CUDA_MODULE (CUDA builds),
 * EHAT_TEST_FAKE_MODULES (the fakes' directory), EHAT_MODELS_DIR,
 * EHAT_BACKEND_PATH (CUDA builds). */
#include "ehat.h"
#include "ehat-backend.h"

#include <elf.h>
#include <glib/gstdio.h>
#include <string.h>

static gboolean cuda_built;

/* ---- DT_NEEDED from the ELF dynamic section ---- */

static gboolean
in_file (gsize size, guint64 off, guint64 len)
{
  return off <= size && len <= size - off;
}

/* The DT_NEEDED names of an ELF64 file, or NULL with the reason. */
static GPtrArray *
elf_needed (const char *path, char **why)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GMappedFile) mf = g_mapped_file_new (path, FALSE, &error);
  const guint8 *d;
  gsize size;
  const Elf64_Ehdr *eh;
  GPtrArray *needed;

  if (!mf) {
    *why = g_strdup (error->message);
    return NULL;
  }
  d = (const guint8 *) g_mapped_file_get_contents (mf);
  size = g_mapped_file_get_length (mf);
  eh = (const Elf64_Ehdr *) d;
  if (size < sizeof (Elf64_Ehdr) || memcmp (eh->e_ident, ELFMAG, SELFMAG)
      || eh->e_ident[EI_CLASS] != ELFCLASS64
      || eh->e_shentsize != sizeof (Elf64_Shdr)
      || !in_file (size, eh->e_shoff, (guint64) eh->e_shnum
          * sizeof (Elf64_Shdr))) {
    *why = g_strdup_printf ("%s: not an ELF64 file with section headers",
        path);
    return NULL;
  }
  needed = g_ptr_array_new_with_free_func (g_free);
  for (int i = 0; i < eh->e_shnum; i++) {
    const Elf64_Shdr *sh = (const Elf64_Shdr *) (d + eh->e_shoff) + i;
    const Elf64_Shdr *str;

    if (sh->sh_type != SHT_DYNAMIC)
      continue;
    if (sh->sh_link >= eh->e_shnum
        || !in_file (size, sh->sh_offset, sh->sh_size)) {
      *why = g_strdup_printf ("%s: broken dynamic section", path);
      g_ptr_array_unref (needed);
      return NULL;
    }
    str = (const Elf64_Shdr *) (d + eh->e_shoff) + sh->sh_link;
    if (!in_file (size, str->sh_offset, str->sh_size)) {
      *why = g_strdup_printf ("%s: broken dynamic string table", path);
      g_ptr_array_unref (needed);
      return NULL;
    }
    for (guint64 k = 0; k < sh->sh_size / sizeof (Elf64_Dyn); k++) {
      const Elf64_Dyn *dyn = (const Elf64_Dyn *) (d + sh->sh_offset) + k;
      const char *s;

      if (dyn->d_tag == DT_NULL)
        break;
      if (dyn->d_tag != DT_NEEDED)
        continue;
      if (dyn->d_un.d_val >= str->sh_size) {
        *why = g_strdup_printf ("%s: DT_NEEDED outside .dynstr", path);
        g_ptr_array_unref (needed);
        return NULL;
      }
      s = (const char *) d + str->sh_offset + dyn->d_un.d_val;
      g_ptr_array_add (needed, g_strndup (s, str->sh_size
              - dyn->d_un.d_val));
    }
  }
  return needed;
}

static GPtrArray *
needed_of (const char *path)
{
  g_autofree char *why = NULL;
  GPtrArray *n = elf_needed (path, &why);

  if (!n)
    g_error ("%s", why);
  return n;
}

static gboolean
needs (GPtrArray *needed, const char *prefix)
{
  for (guint i = 0; i < needed->len; i++)
    if (g_str_has_prefix (g_ptr_array_index (needed, i), prefix))
      return TRUE;
  return FALSE;
}

static const char *const cuda_libs[] = {
  "libcublas", "libcublasLt", "libcudart", "libcuda.", "libnvrtc",
  "libcufft", "libcurand", "libcudnn", NULL
};

/* A CUDA library mapped into this process (/proc/self/maps)? */
static gboolean
cuda_mapped (const char **which)
{
  g_autofree char *maps = NULL;

  if (!g_file_get_contents ("/proc/self/maps", &maps, NULL, NULL))
    return FALSE;
  for (int i = 0; cuda_libs[i]; i++)
    if (i != 3 && strstr (maps, cuda_libs[i])) {      /* not the driver */
      *which = cuda_libs[i];
      return TRUE;
    }
  return FALSE;
}

static EhatModel *
load_model (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *p = g_build_filename (g_getenv ("EHAT_MODELS_DIR"),
      "ehat-fast-x2.safetensors", NULL);
  EhatModel *m = ehat_model_load (p, &error);

  g_assert_no_error (error);
  return m;
}

static void
test_no_cuda_linked (void)
{
  g_auto (GStrv) paths = g_strsplit (g_getenv ("EHAT_TEST_NO_CUDA_BINARIES"),
      G_SEARCHPATH_SEPARATOR_S, -1);
  const char *libehat = g_getenv ("EHAT_TEST_LIBEHAT");
  const char *module = g_getenv ("EHAT_TEST_CUDA_MODULE");
  EhatEngineOptions o = EHAT_ENGINE_OPTIONS_INIT;
  g_autoptr (GError) error = NULL;
  g_autoptr (EhatModel) model = NULL;
  EhatEngine *e;
  const char *which = NULL;
  int checked = 0;

  for (int i = 0; paths[i]; i++) {
    g_autoptr (GPtrArray) n = NULL;
    g_autofree char *list = NULL;

    if (!*paths[i])
      continue;
    n = needed_of (paths[i]);
    g_ptr_array_add (n, NULL);
    list = g_strjoinv (" ", (char **) n->pdata);
    g_ptr_array_remove_index (n, n->len - 1);
    g_test_message ("%s: NEEDED %s", paths[i], list);
    for (int k = 0; cuda_libs[k]; k++)
      if (needs (n, cuda_libs[k]))
        g_test_fail_printf ("%s links %s (NEEDED %s)", paths[i],
            cuda_libs[k], list);
    /* the parser's positive control */
    if (g_strcmp0 (paths[i], libehat) == 0)
      g_assert_true (needs (n, "libglib-2.0.so"));
    checked++;
  }
  g_assert_cmpint (checked, >=, 2);     /* CLI and libehat at least */

  if (cuda_built) {
    g_autoptr (GPtrArray) n = needed_of (module);
    g_assert_true (needs (n, "libcublas.so"));
    g_assert_true (needs (n, "libcudart.so"));
    g_assert_true (needs (n, "libehat.so"));
  } else {
    g_assert_null (module);
  }

  /* what the DT_NEEDED lists mean: a CPU engine maps no CUDA library */
  model = load_model ();
  o.backend = EHAT_BACKEND_CPU;
  e = ehat_engine_new (model, &o, &error);
  g_assert_no_error (error);
  g_assert_false (cuda_mapped (&which));
  ehat_engine_free (e);
}

/* What backend=auto / cuda must say here: NULL when a device is usable. */
static char *
expected_cuda_problem (gboolean for_auto)
{
  g_autoptr (GError) error = NULL;

  if (!cuda_built)
    return g_strdup ("libehat built without CUDA");
  if (!ehat_cuda_driver_probe (&error)) {
    g_assert_error (error, EHAT_ERROR, EHAT_ERROR_UNSUPPORTED);
    g_assert_true (g_str_has_prefix (error->message, "no CUDA driver (")
        || g_str_has_prefix (error->message, "no CUDA device ("));
    if (for_auto)
      return g_strdup (error->message);
  }
  return NULL;
}

static void
test_auto (void)
{
  g_autoptr (EhatModel) model = load_model ();
  EhatEngineOptions o = EHAT_ENGINE_OPTIONS_INIT;
  g_autoptr (GError) error = NULL;
  g_autofree char *problem = expected_cuda_problem (TRUE);
  const char *which = NULL;
  EhatEngine *e;

  o.backend = EHAT_BACKEND_AUTO;
  e = ehat_engine_new (model, &o, &error);
  g_assert_no_error (error);
  if (ehat_engine_get_backend (e) == EHAT_BACKEND_CUDA) {
    g_assert_true (cuda_built);
    g_assert_null (ehat_engine_get_fallback_reason (e));
    g_test_message ("a CUDA device is usable: %s", ehat_engine_describe (e));
  } else if (problem) {
    g_autofree char *want = g_strdup_printf ("CUDA unavailable (%s); "
        "using the CPU", problem);
    g_test_message ("auto: %s", ehat_engine_get_fallback_reason (e));
    g_assert_cmpint (ehat_engine_get_backend (e), ==, EHAT_BACKEND_CPU);
    g_assert_cmpstr (ehat_engine_get_fallback_reason (e), ==, want);
    /* decided without opening the module: no cuBLAS in this process */
    if (cuda_mapped (&which))
      g_test_fail_printf ("backend=auto mapped %s", which);
  } else {
    /* a driver and a device, and still the CPU: the module's reason */
    const char *r = ehat_engine_get_fallback_reason (e);
    g_test_message ("auto (driver present): %s", r);
    g_assert_nonnull (r);
    g_assert_true (g_str_has_prefix (r, "CUDA unavailable ("));
  }
  ehat_engine_free (e);
}

static void
test_cuda (void)
{
  g_autoptr (EhatModel) model = load_model ();
  EhatEngineOptions o = EHAT_ENGINE_OPTIONS_INIT;
  g_autoptr (GError) error = NULL;
  g_autofree char *problem = expected_cuda_problem (FALSE);
  EhatEngine *e;

  o.backend = EHAT_BACKEND_CUDA;
  if (!cuda_built) {
    e = ehat_engine_new (model, &o, &error);
    g_assert_null (e);
    g_assert_error (error, EHAT_ERROR, EHAT_ERROR_UNSUPPORTED);
    g_assert_cmpstr (error->message, ==, problem);
    return;
  }
  if (ehat_cuda_driver_probe (NULL)) {
    /* a device: the error for one that does not exist */
    o.device_id = 1000;
    e = ehat_engine_new (model, &o, &error);
    g_assert_null (e);
    g_assert_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT);
    g_assert_true (g_str_has_prefix (error->message, "no CUDA device 1000"));
    return;
  }
  /* the module loads (EHAT_BACKEND_PATH names the build tree's) and its
   * constructor says there is no device */
  e = ehat_engine_new (model, &o, &error);
  g_assert_null (e);
  g_test_message ("cuda: %s", error->message);
  g_assert_error (error, EHAT_ERROR, EHAT_ERROR_UNSUPPORTED);
  g_assert_true (g_str_has_prefix (error->message, "no CUDA device ("));
}

/* ---- the loader with fake modules ---- */

static char *
tmp_module_dir (const char *module_name, const char *copy_of,
    const char *contents)
{
  g_autoptr (GError) error = NULL;
  char *dir = g_dir_make_tmp ("ehat-module-XXXXXX", &error);
  g_autofree char *dst = NULL, *data = NULL;
  gsize len = 0;

  g_assert_no_error (error);
  dst = g_build_filename (dir, module_name, NULL);
  if (copy_of) {
    g_file_get_contents (copy_of, &data, &len, &error);
    g_assert_no_error (error);
    g_file_set_contents (dst, data, len, &error);
  } else {
    g_file_set_contents (dst, contents, -1, &error);
  }
  g_assert_no_error (error);
  return dir;
}

static void
rm_module_dir (const char *dir, const char *module_name)
{
  g_autofree char *p = g_build_filename (dir, module_name, NULL);
  g_unlink (p);
  g_rmdir (dir);
}

static void
expect_refused (const char *name, const char *search, int code,
    const char *part)
{
  g_autoptr (GError) error = NULL;
  const EhatBackendModule *m = ehat_backend_module_load_from (name, search,
      &error);

  g_assert_null (m);
  g_assert_nonnull (error);
  g_test_message ("%s: %s", name, error->message);
  g_assert_error (error, EHAT_ERROR, code);
  if (!strstr (error->message, part))
    g_test_fail_printf ("'%s' not in \"%s\"", part, error->message);
}

static void
test_loader (void)
{
  const char *fakes = g_getenv ("EHAT_TEST_FAKE_MODULES");
  g_autofree char *path = g_strdup_printf ("/nonexistent%s%s",
      G_SEARCHPATH_SEPARATOR_S, fakes);
  g_autofree char *garbage = tmp_module_dir ("libehat-bogus.so", NULL,
      "this is not a shared object\n");
  g_autofree char *path2 = g_strdup_printf ("%s%s%s", garbage,
      G_SEARCHPATH_SEPARATOR_S, fakes);
  g_autoptr (GError) error = NULL;
  const EhatBackendModule *m;
  EhatBackend *be;

  g_assert_nonnull (fakes);
  /* good: found in the second directory, creates, calls back into libehat */
  m = ehat_backend_module_load_from ("fake", path, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (m->name, ==, "fake");
  be = m->create (0, EHAT_PRECISION_FP32, &error);
  g_assert_no_error (error);
  g_assert_cmpint (be->kind, ==, EHAT_BACKEND_CPU);
  g_assert_true (g_str_has_prefix (be->ops->describe (be), "cpu"));
  be->ops->destroy (be);
  g_assert_null (m->create (7, EHAT_PRECISION_FP32, &error));
  g_assert_error (error, EHAT_ERROR, EHAT_ERROR_UNSUPPORTED);
  g_clear_error (&error);
  /* loading again: the same resident module */
  g_assert_true (ehat_backend_module_load_from ("fake", path, NULL) == m);

  expect_refused ("stale", path, EHAT_ERROR_BACKEND, "is incompatible with "
      "this libehat (module ABI 42");
  expect_refused ("nosym", path, EHAT_ERROR_BACKEND, "is not an ehat "
      "backend module (no symbol ehat_backend_module_entry)");
  expect_refused ("misnamed", path, EHAT_ERROR_BACKEND, "is not the "
      "MISNAMED backend (it says \"something-else\")");
  expect_refused ("absent", path, EHAT_ERROR_UNSUPPORTED, "the ABSENT "
      "backend module libehat-absent.so was not found (searched "
      "/nonexistent");
  /* a library it needs is missing (the CUDA module without libcublas):
   * the dynamic linker's message */
  expect_refused ("needsdep", path, EHAT_ERROR_BACKEND, "cannot load the "
      "NEEDSDEP backend module ");
  expect_refused ("needsdep", path, EHAT_ERROR_BACKEND,
      "libehat-absent-dependency.so.1: cannot open shared object file");
  /* a file that is no shared object, found first */
  expect_refused ("bogus", path2, EHAT_ERROR_BACKEND, "cannot load the "
      "BOGUS backend module ");
  /* an empty path searches nothing */
  expect_refused ("fake", "", EHAT_ERROR_UNSUPPORTED, "(searched "
      "nothing)");
  rm_module_dir (garbage, "libehat-bogus.so");
}

/* ---- the engine with a bogus libehat-cuda.so ---- */

/* Made in main(): a directory whose libehat-cuda.so is a garbage file, one
 * whose libehat-cuda.so is the stale fake module.  The subprocess sets
 * EHAT_BACKEND_PATH first thing, before any thread exists (setenv is not
 * thread-safe). */
static char *garbage_dir, *stale_dir;

typedef struct
{
  const char **dir;
  const char *want;             /* in the loader's error (CUDA builds) */
} BogusCase;

static const BogusCase bogus_garbage = {
  (const char **) &garbage_dir, "cannot load the CUDA backend module "
};
static const BogusCase bogus_stale = {
  (const char **) &stale_dir, "is incompatible with this libehat (module "
      "ABI 42"
};

/* In the subprocess (fresh: no thread, no module outcome kept yet). */
static void
engine_bogus_child (const BogusCase *c)
{
  g_autoptr (EhatModel) model = NULL;
  EhatEngineOptions o = EHAT_ENGINE_OPTIONS_INIT;
  g_autoptr (GError) error = NULL;
  g_autoptr (GError) probe = NULL;
  const char *want = cuda_built ? c->want : "libehat built without CUDA";
  g_autofree char *reason = NULL;
  EhatEngine *e;

  g_setenv ("EHAT_BACKEND_PATH", *c->dir, TRUE);
  model = load_model ();

  /* backend=cuda: the loader's error (or "built without CUDA") */
  o.backend = EHAT_BACKEND_CUDA;
  e = ehat_engine_new (model, &o, &error);
  g_assert_null (e);
  g_assert_nonnull (error);
  g_printerr ("cuda: %s\n", error->message);
  if (!strstr (error->message, want))
    g_error ("'%s' not in \"%s\"", want, error->message);

  /* backend=auto: the CPU, with the driver probe's reason when it said no
   * (the module is then never opened), else the loader's */
  o.backend = EHAT_BACKEND_AUTO;
  e = ehat_engine_new (model, &o, NULL);
  g_assert_nonnull (e);
  g_assert_cmpint (ehat_engine_get_backend (e), ==, EHAT_BACKEND_CPU);
  g_printerr ("auto: %s\n", ehat_engine_get_fallback_reason (e));
  if (cuda_built && !ehat_cuda_driver_probe (&probe))
    reason = g_strdup_printf ("CUDA unavailable (%s); using the CPU",
        probe->message);
  else
    reason = g_strdup_printf ("CUDA unavailable (%s); using the CPU",
        error->message);
  g_assert_cmpstr (ehat_engine_get_fallback_reason (e), ==, reason);
  ehat_engine_free (e);
}

static void
test_engine_bogus (gconstpointer data)
{
  if (g_test_subprocess ()) {
    engine_bogus_child (data);
    return;
  }
  g_test_trap_subprocess (NULL, 0, G_TEST_SUBPROCESS_INHERIT_STDERR);
  g_test_trap_assert_passed ();
}

int
main (int argc, char **argv)
{
  g_autofree char *stale = NULL;
  int rc;

  g_test_init (&argc, &argv, NULL);
  cuda_built = g_strcmp0 (g_getenv ("EHAT_TEST_CUDA_BUILT"), "1") == 0;
  g_assert_true (cuda_built
      || g_strcmp0 (g_getenv ("EHAT_TEST_CUDA_BUILT"), "0") == 0);
  g_test_add_func ("/module/no-cuda-linked", test_no_cuda_linked);
  g_test_add_func ("/module/auto", test_auto);
  g_test_add_func ("/module/cuda", test_cuda);
  g_test_add_func ("/module/loader", test_loader);
  g_test_add_data_func ("/module/engine-bogus/garbage", &bogus_garbage,
      test_engine_bogus);
  g_test_add_data_func ("/module/engine-bogus/stale", &bogus_stale,
      test_engine_bogus);

  stale = g_build_filename (g_getenv ("EHAT_TEST_FAKE_MODULES"),
      "libehat-stale.so", NULL);
  garbage_dir = tmp_module_dir ("libehat-cuda.so", NULL,
      "\177ELF but not really\n");
  stale_dir = tmp_module_dir ("libehat-cuda.so", stale, NULL);
  rc = g_test_run ();
  rm_module_dir (garbage_dir, "libehat-cuda.so");
  rm_module_dir (stale_dir, "libehat-cuda.so");
  g_free (garbage_dir);
  g_free (stale_dir);
  return rc;
}
