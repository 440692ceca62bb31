/* libehat — fault injection for the tests (internal, not installed).
 *
 * The CPU backend's allocator asks ehat_fault_alloc_fails() before every
 * allocation of activation or weight memory; a test can make it fail, as
 * a host (or, with the same hook in a device backend, a device) out of
 * memory would, with EHAT_ERROR_OUT_OF_MEMORY.  Two modes, combinable:
 *
 *   limit     every allocation larger than max_bytes fails (a machine with
 *             little memory: the tiler must shrink tiles until they fit);
 *   countdown after `skip` allocations that succeed, the next `count` fail
 *             (a transient failure: the retry must succeed).
 *
 * Without a call, the environment configures it once, at the first
 * allocation: EHAT_FAULT_ALLOC_LIMIT=<bytes> and
 * EHAT_FAULT_FAIL_ALLOCS=<skip>:<count>.  Costs one atomic read when off.
 * Thread-safe (atomics), process-wide.
 */
#ifndef EHAT_FAULT_H
#define EHAT_FAULT_H

#include <glib.h>

G_BEGIN_DECLS

/* 0 = no limit. */
void ehat_fault_set_alloc_limit (gsize max_bytes);
/* count 0 = off. */
void ehat_fault_fail_allocs (guint skip, guint count);
/* Both off. */
void ehat_fault_reset (void);
/* Allocations refused since the last reset. */
guint ehat_fault_get_failed_allocs (void);

/* For allocators: TRUE (and error set to EHAT_ERROR_OUT_OF_MEMORY) when
 * this allocation of `bytes` is to fail. */
gboolean ehat_fault_alloc_fails (gsize bytes, GError **error);

G_END_DECLS

#endif /* EHAT_FAULT_H */
