/* Fault injection for the tests: see ehat-fault.h. */
#include "ehat-fault.h"

#include "ehat.h"

#include <stdio.h>
#include <stdlib.h>

static gint enabled;            /* any mode on (or env not read yet: -1) */
static gsize limit;             /* bytes, 0 = none */
static gint skip_left;          /* allocations still to succeed */
static gint fail_left;          /* then allocations to fail */
static guint failed;
static gsize env_once;

static void
read_env (void)
{
  if (g_once_init_enter (&env_once)) {
    const char *l = g_getenv ("EHAT_FAULT_ALLOC_LIMIT");
    const char *f = g_getenv ("EHAT_FAULT_FAIL_ALLOCS");
    unsigned skip = 0, count = 0;

    if (l && *l)
      ehat_fault_set_alloc_limit (g_ascii_strtoull (l, NULL, 10));
    if (f && sscanf (f, "%u:%u", &skip, &count) == 2)
      ehat_fault_fail_allocs (skip, count);
    g_once_init_leave (&env_once, 1);
  }
}

static void
update_enabled (void)
{
  g_atomic_int_set (&enabled, g_atomic_pointer_get (&limit) != 0
      || g_atomic_int_get (&fail_left) > 0);
}

void
ehat_fault_set_alloc_limit (gsize max_bytes)
{
  g_atomic_pointer_set (&limit, max_bytes);
  update_enabled ();
}

void
ehat_fault_fail_allocs (guint skip, guint count)
{
  g_atomic_int_set (&skip_left, (gint) MIN (skip, G_MAXINT));
  g_atomic_int_set (&fail_left, (gint) MIN (count, G_MAXINT));
  update_enabled ();
}

void
ehat_fault_reset (void)
{
  read_env ();                  /* so that the env cannot re-arm it later */
  ehat_fault_set_alloc_limit (0);
  ehat_fault_fail_allocs (0, 0);
  g_atomic_int_set ((gint *) &failed, 0);
}

guint
ehat_fault_get_failed_allocs (void)
{
  return (guint) g_atomic_int_get ((gint *) &failed);
}

gboolean
ehat_fault_alloc_fails (gsize bytes, GError **error)
{
  gsize max;
  gboolean fail = FALSE;

  read_env ();
  if (!g_atomic_int_get (&enabled))
    return FALSE;
  max = (gsize) g_atomic_pointer_get (&limit);
  if (max && bytes > max) {
    fail = TRUE;
  } else if (g_atomic_int_get (&fail_left) > 0) {
    if (g_atomic_int_add (&skip_left, -1) <= 0) {
      g_atomic_int_set (&skip_left, 0);
      fail = g_atomic_int_add (&fail_left, -1) > 0;
      if (!fail)
        g_atomic_int_set (&fail_left, 0);
    }
  }
  if (!fail)
    return FALSE;
  g_atomic_int_inc ((gint *) &failed);
  update_enabled ();
  g_set_error (error, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY,
      "out of memory allocating %" G_GSIZE_FORMAT " bytes (injected fault)",
      bytes);
  return TRUE;
}
