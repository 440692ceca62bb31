/* A small thread pool for the CPU backend (internal).
 *
 * Why not OpenMP: its idle threads busy-wait at the end of every parallel
 * region.  Inside a GStreamer pipeline, with a decoder and an encoder on the
 * same cores, that spinning steals the time the working thread needs: on 2
 * cores with one other busy process a HAT-S forward took 6× longer with
 * libgomp's default wait policy than with OMP_WAIT_POLICY=passive, and a
 * library cannot set that policy for its host process.  Here idle workers
 * spin only briefly, then sleep on a condition variable. */
#ifndef EHAT_POOL_H
#define EHAT_POOL_H

#include <glib.h>

G_BEGIN_DECLS

typedef struct _EhatPool EhatPool;

/* Runs items [begin, end) on thread `thread` (0 = the caller). */
typedef void (*EhatPoolFunc) (gpointer data, gsize begin, gsize end,
    int thread);

EhatPool *ehat_pool_new (int n_threads);
void ehat_pool_free (EhatPool *pool);
int ehat_pool_get_n_threads (EhatPool *pool);

/* Splits [0, n) into chunks of `grain` items, handed out to the threads as
 * they come free (the caller works too); returns when all are done.  Not
 * reentrant: one parallel_for per pool at a time. */
void ehat_pool_parallel_for (EhatPool *pool, gsize n, gsize grain,
    EhatPoolFunc func, gpointer data);

G_END_DECLS

#endif /* EHAT_POOL_H */
