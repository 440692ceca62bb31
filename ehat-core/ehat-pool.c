/* See ehat-pool.h for why this exists. */
#include "ehat-pool.h"

/* How long an idle worker polls for the next job before it sleeps: about
 * the gap between two operations of the network, so back-to-back regions
 * do not pay a wake-up, while a worker never spins for long. */
#define SPIN_ITERATIONS 20000

struct _EhatPool
{
  int n_threads;
  GThread **workers;

  GMutex lock;
  GCond wake;                   /* workers: a new job or quit */
  GCond done;                   /* caller: the last worker finished */
  gint generation;              /* bumped per job (atomic reads) */
  gboolean quit;
  int busy;                     /* workers still in the current job */

  /* the current job */
  EhatPoolFunc func;
  gpointer data;
  gsize n, grain;
  gsize next;                   /* next unclaimed item (atomic) */
};

static void
run_chunks (EhatPool *p, int thread)
{
  for (;;) {
    gsize begin = (gsize) g_atomic_pointer_add (&p->next, p->grain);
    if (begin >= p->n)
      break;
    p->func (p->data, begin, MIN (begin + p->grain, p->n), thread);
  }
}

typedef struct
{
  EhatPool *pool;
  int index;
} WorkerArg;

static gpointer
worker_main (gpointer arg)
{
  WorkerArg *wa = arg;
  EhatPool *p = wa->pool;
  int index = wa->index;
  gint seen = 0;

  g_free (wa);
  for (;;) {
    gint gen;
    int spins = 0;

    while ((gen = g_atomic_int_get (&p->generation)) == seen
        && spins < SPIN_ITERATIONS && !g_atomic_int_get (&p->quit))
      spins++;
    if (gen == seen) {
      g_mutex_lock (&p->lock);
      while (p->generation == seen && !p->quit)
        g_cond_wait (&p->wake, &p->lock);
      gen = p->generation;
      g_mutex_unlock (&p->lock);
    }
    if (g_atomic_int_get (&p->quit))
      return NULL;
    seen = gen;
    run_chunks (p, index);
    g_mutex_lock (&p->lock);
    if (--p->busy == 0)
      g_cond_signal (&p->done);
    g_mutex_unlock (&p->lock);
  }
}

EhatPool *
ehat_pool_new (int n_threads)
{
  EhatPool *p = g_new0 (EhatPool, 1);

  p->n_threads = MAX (n_threads, 1);
  g_mutex_init (&p->lock);
  g_cond_init (&p->wake);
  g_cond_init (&p->done);
  p->workers = g_new0 (GThread *, p->n_threads);
  for (int i = 1; i < p->n_threads; i++) {
    WorkerArg *wa = g_new (WorkerArg, 1);
    wa->pool = p;
    wa->index = i;
    p->workers[i] = g_thread_new ("ehat-worker", worker_main, wa);
  }
  return p;
}

void
ehat_pool_free (EhatPool *p)
{
  if (!p)
    return;
  g_mutex_lock (&p->lock);
  g_atomic_int_set (&p->quit, TRUE);
  g_cond_broadcast (&p->wake);
  g_mutex_unlock (&p->lock);
  for (int i = 1; i < p->n_threads; i++)
    g_thread_join (p->workers[i]);
  g_free (p->workers);
  g_mutex_clear (&p->lock);
  g_cond_clear (&p->wake);
  g_cond_clear (&p->done);
  g_free (p);
}

int
ehat_pool_get_n_threads (EhatPool *p)
{
  return p->n_threads;
}

void
ehat_pool_parallel_for (EhatPool *p, gsize n, gsize grain,
    EhatPoolFunc func, gpointer data)
{
  if (n == 0)
    return;
  grain = MAX (grain, 1);
  /* Not worth waking anyone for a single chunk. */
  if (p->n_threads == 1 || n <= grain) {
    func (data, 0, n, 0);
    return;
  }
  g_mutex_lock (&p->lock);
  p->func = func;
  p->data = data;
  p->n = n;
  p->grain = grain;
  p->next = 0;
  p->busy = p->n_threads - 1;
  g_atomic_int_inc (&p->generation);
  g_cond_broadcast (&p->wake);
  g_mutex_unlock (&p->lock);

  run_chunks (p, 0);

  g_mutex_lock (&p->lock);
  while (p->busy > 0)
    g_cond_wait (&p->done, &p->lock);
  g_mutex_unlock (&p->lock);
}
