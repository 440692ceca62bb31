/* Fused window attention for the CPU backend (HAB's shifted-window
 * self-attention and OCAB's overlapping cross-attention).
 *
 * One task = one (image, window, head).  Its q, k and v are gathered
 * straight from the qkv rows of the feature map (the cyclic shift and the
 * OCAB unfold are just index arithmetic, so no shifted or unfolded copy of
 * the map ever exists), scores get the dense relative-position bias and the
 * shift mask inside the softmax, and the result is scattered back to the
 * token rows it came from. */
#include "ehat-cpu.h"


/* GCC/Clang vector extensions: one 16-float vector is a zmm register in the
 * AVX-512 clone, two ymm in the AVX2 one, four xmm in the baseline, so the
 * micro-kernels below keep their accumulators in registers everywhere. */
typedef float v16 __attribute__ ((vector_size (64), aligned (4)));

#define JB 16                   /* columns per vector */
#define RB 8                    /* query rows per register block */

static inline int
round_up (int v, int m)
{
  return (v + m - 1) / m * m;
}

static inline v16
load16 (const float *p)
{
  v16 v;
  memcpy (&v, p, sizeof v);
  return v;
}

static inline void
store16 (float *p, v16 v)
{
  memcpy (p, &v, sizeof v);
}

/* softmax(q·kᵀ + bias + mask)·v for nqp queries (nqp % RB == 0; rows past
 * the real ones are zero and their output ignored).
 * q [nqp][d] pre-scaled; kT [d][nkp] (columns ≥ nk zero); v [nk][dp]
 * (columns ≥ d zero, dp % JB == 0); bias [nq][nk] (rows ≥ nq not read);
 * regq/regk: shift-mask regions or NULL; S: scratch [RB][nkp]; o [nqp][dp]. */
EHAT_CLONES static void
attend (const float *q, int d, int nq, int nqp, const float *kT, int nk,
    int nkp, const float *v, int dp, const float *bias, const gint8 *regq,
    const gint8 *regk, float *S, float *o)
{
  for (int i0 = 0; i0 < nqp; i0 += RB) {
    int rows = MIN (RB, nq - i0);

    for (int j0 = 0; j0 < nkp; j0 += JB) {
      v16 acc[RB];
      for (int r = 0; r < RB; r++)
        acc[r] = (v16) { 0 };
      for (int c = 0; c < d; c++) {
        v16 kv = load16 (kT + (gsize) c * nkp + j0);
        for (int r = 0; r < RB; r++)
          acc[r] += q[(i0 + r) * d + c] * kv;
      }
      for (int r = 0; r < RB; r++)
        store16 (S + r * nkp + j0, acc[r]);
    }

    for (int r = 0; r < rows; r++) {
      float *s = S + r * nkp;
      const float *b = bias + (gsize) (i0 + r) * nk;
      float mx = -G_MAXFLOAT, sum = 0.0f, inv;

#pragma omp simd
      for (int j = 0; j < nk; j++)
        s[j] += b[j];
      if (regq) {
        gint8 rq = regq[i0 + r];
#pragma omp simd
        for (int j = 0; j < nk; j++)
          s[j] += regk[j] != rq ? -100.0f : 0.0f;
      }
#pragma omp simd reduction(max:mx)
      for (int j = 0; j < nk; j++)
        mx = s[j] > mx ? s[j] : mx;
#pragma omp simd reduction(+:sum)
      for (int j = 0; j < nk; j++) {
        s[j] = ehat_expf (s[j] - mx);
        sum += s[j];
      }
      inv = 1.0f / sum;
#pragma omp simd
      for (int j = 0; j < nk; j++)
        s[j] *= inv;
    }
    for (int r = rows; r < RB; r++)
      memset (S + r * nkp, 0, nk * sizeof (float));

    /* Two vectors of output columns at a time: 16 accumulators. */
    for (int c0 = 0; c0 < dp; c0 += 2 * JB) {
      gboolean two = c0 + JB < dp;
      v16 a0[RB], a1[RB];
      for (int r = 0; r < RB; r++)
        a0[r] = a1[r] = (v16) { 0 };
      for (int j = 0; j < nk; j++) {
        const float *vr = v + (gsize) j * dp + c0;
        v16 v0 = load16 (vr), v1 = two ? load16 (vr + JB) : (v16) { 0 };
        for (int r = 0; r < RB; r++) {
          float p = S[r * nkp + j];
          a0[r] += p * v0;
          a1[r] += p * v1;
        }
      }
      for (int r = 0; r < RB; r++) {
        store16 (o + (gsize) (i0 + r) * dp + c0, a0[r]);
        if (two)
          store16 (o + (gsize) (i0 + r) * dp + c0 + JB, a1[r]);
      }
    }
  }
}

typedef struct
{
  float *q, *kT, *v, *S, *o;
  gsize *qpos;                  /* row index of each query token */
  gsize *kpos;                  /* row index of each key, or G_MAXSIZE */
  gint8 *reg;
} Scratch;

static void
scratch_init (Scratch *s, int nq, int nk, int d, int dp)
{
  int nkp = round_up (nk, JB), nqp = round_up (nq, RB);
  /* rows past nq stay zero */
  s->q = g_new0 (float, (gsize) nqp * d);
  s->kT = g_new0 (float, (gsize) d * nkp);
  s->v = g_new0 (float, (gsize) nk * dp);
  s->S = g_new (float, (gsize) RB * nkp);
  s->o = g_new (float, (gsize) nqp * dp);
  s->qpos = g_new (gsize, nq);
  s->kpos = g_new (gsize, nk);
  s->reg = g_new (gint8, nq);
}

static void
scratch_clear (Scratch *s)
{
  g_free (s->q);
  g_free (s->kT);
  g_free (s->v);
  g_free (s->S);
  g_free (s->o);
  g_free (s->qpos);
  g_free (s->kpos);
  g_free (s->reg);
}

/* Gathers head hd's q (scaled), k and v; keys at kpos G_MAXSIZE are the
 * zero vectors of OCAB's padding (kT and v were zeroed for them). */
static void
gather (Scratch *s, const float *qkv, int c, int hd, int d, int dp, int nq,
    int nk, int nkp, float scale)
{
  const gsize stride = 3 * (gsize) c;

  for (int t = 0; t < nq; t++) {
    const float *row = qkv + s->qpos[t] * stride + hd * d;
    for (int e = 0; e < d; e++)
      s->q[t * d + e] = row[e] * scale;
  }
  for (int t = 0; t < nk; t++) {
    if (s->kpos[t] == G_MAXSIZE) {
      for (int e = 0; e < d; e++) {
        s->kT[(gsize) e * nkp + t] = 0.0f;
        s->v[(gsize) t * dp + e] = 0.0f;
      }
      continue;
    }
    const float *row = qkv + s->kpos[t] * stride + c + hd * d;
    for (int e = 0; e < d; e++) {
      s->kT[(gsize) e * nkp + t] = row[e];
      s->v[(gsize) t * dp + e] = row[c + e];
    }
  }
}

static void
scatter (const Scratch *s, float *out, int c, int hd, int d, int dp, int nq)
{
  for (int t = 0; t < nq; t++)
    memcpy (out + s->qpos[t] * c + hd * d, s->o + (gsize) t * dp,
        d * sizeof (float));
}

typedef struct
{
  const float *table;
  const gint32 *index;
  float *dense;
  int heads;
  gsize nqk;
} BiasJob;

static void
expand_heads (gpointer data, gsize begin, gsize end, int thread)
{
  const BiasJob *j = data;
  for (gsize hd = begin; hd < end; hd++) {
    float *d = j->dense + hd * j->nqk;
    for (gsize ij = 0; ij < j->nqk; ij++)
      d[ij] = j->table[j->index[ij] * j->heads + hd];
  }
}

/* [L][heads] table → [heads][nq][nk], reused across the backend's calls. */
static const float *
expand_bias (EhatBackend *be, const float *table, const gint32 *index,
    int heads, int nq, int nk)
{
  EhatCpuBackend *cpu = (EhatCpuBackend *) be;
  gsize n = (gsize) heads * nq * nk;
  BiasJob j;

  if (cpu->dense_bias_len < n) {
    g_free (cpu->dense_bias);
    cpu->dense_bias = g_new (float, n);
    cpu->dense_bias_len = n;
  }
  j = (BiasJob) { table, index, cpu->dense_bias, heads, (gsize) nq * nk };
  ehat_pool_parallel_for (cpu->pool, heads, 1, expand_heads, &j);
  return cpu->dense_bias;
}

/* Shift-mask region of a coordinate of the shifted map (EHAT-SPEC.md §4). */
static inline gint8
region (int p, int size, int ws, int shift)
{
  return p < size - ws ? 0 : (p < size - shift ? 1 : 2);
}

/* One attention call: tasks are (image, window, head), each thread with
 * its own scratch. */
typedef struct
{
  const float *qkv, *bias;
  float *out;
  Scratch *scratch;             /* per thread */
  int h, w, c, heads, ws, wse, shift, d, dp, nq, nk, nkp, nwx, nwy;
  gboolean overlap;
  float scale;
} AttnJob;

static void
attn_tasks (gpointer data, gsize begin, gsize end, int thread)
{
  const AttnJob *j = data;
  Scratch *s = &j->scratch[thread];
  int ws = j->ws, h = j->h, w = j->w, shift = j->shift;
  int pad = (j->wse - ws) / 2;

  for (gsize task = begin; task < end; task++) {
    int hd = task % j->heads;
    gsize win = task / j->heads;
    int wx = win % j->nwx, wy = (win / j->nwx) % j->nwy;
    gsize img = win / ((gsize) j->nwx * j->nwy);

    if (!j->overlap) {
      /* Token t of the shifted map's window sits at (py, px); the map was
       * rolled by −shift, so it came from (py + shift, px + shift). */
      for (int t = 0; t < j->nq; t++) {
        int py = wy * ws + t / ws, px = wx * ws + t % ws;
        int sy = (py + shift) % h, sx = (px + shift) % w;
        s->qpos[t] = (img * h + sy) * w + sx;
        s->kpos[t] = s->qpos[t];
        s->reg[t] = shift ? region (py, h, ws, shift) * 3
            + region (px, w, ws, shift) : 0;
      }
    } else {
      /* queries: the unshifted window; keys: the wse square around it */
      for (int t = 0; t < j->nq; t++)
        s->qpos[t] = (img * h + wy * ws + t / ws) * w + wx * ws + t % ws;
      for (int t = 0; t < j->nk; t++) {
        int ky = wy * ws - pad + t / j->wse, kx = wx * ws - pad + t % j->wse;
        s->kpos[t] = (ky < 0 || ky >= h || kx < 0 || kx >= w) ? G_MAXSIZE
            : (img * h + ky) * w + kx;
      }
    }
    gather (s, j->qkv, j->c, hd, j->d, j->dp, j->nq, j->nk, j->nkp,
        j->scale);
    attend (s->q, j->d, j->nq, round_up (j->nq, RB), s->kT, j->nk, j->nkp,
        s->v, j->dp, j->bias + (gsize) hd * j->nq * j->nk,
        shift ? s->reg : NULL, s->reg, s->S, s->o);
    scatter (s, j->out, j->c, hd, j->d, j->dp, j->nq);
  }
}

static void
run_attention (EhatBackend *be, AttnJob *j, gsize n_images)
{
  EhatCpuBackend *cpu = (EhatCpuBackend *) be;
  gsize tasks = n_images * j->nwy * j->nwx * j->heads;

  j->scratch = g_new (Scratch, cpu->n_threads);
  for (int t = 0; t < cpu->n_threads; t++)
    scratch_init (&j->scratch[t], j->nq, j->nk, j->d, j->dp);
  ehat_pool_parallel_for (cpu->pool, tasks, 1, attn_tasks, j);
  for (int t = 0; t < cpu->n_threads; t++)
    scratch_clear (&j->scratch[t]);
  g_free (j->scratch);
}

void
ehat_cpu_window_attention (EhatBackend *be, const float *qkv, int n, int h,
    int w, int c, int heads, int ws, int shift, const float *table,
    const gint32 *index, float *out)
{
  int d = c / heads, nq = ws * ws;
  AttnJob j = {
    .qkv = qkv, .out = out, .h = h, .w = w, .c = c, .heads = heads,
    .ws = ws, .wse = ws, .shift = shift, .d = d, .dp = round_up (d, JB),
    .nq = nq, .nk = nq, .nkp = round_up (nq, JB), .nwx = w / ws,
    .nwy = h / ws, .overlap = FALSE,
    .scale = (float) (1.0 / sqrt ((double) d)),
  };

  j.bias = expand_bias (be, table, index, heads, nq, nq);
  run_attention (be, &j, n);
}

void
ehat_cpu_overlap_attention (EhatBackend *be, const float *qkv, int n, int h,
    int w, int c, int heads, int ws, int wse, const float *table,
    const gint32 *index, float *out)
{
  int d = c / heads, nq = ws * ws, nk = wse * wse;
  AttnJob j = {
    .qkv = qkv, .out = out, .h = h, .w = w, .c = c, .heads = heads,
    .ws = ws, .wse = wse, .shift = 0, .d = d, .dp = round_up (d, JB),
    .nq = nq, .nk = nk, .nkp = round_up (nk, JB), .nwx = w / ws,
    .nwy = h / ws, .overlap = TRUE,
    .scale = (float) (1.0 / sqrt ((double) d)),
  };

  j.bias = expand_bias (be, table, index, heads, nq, nk);
  run_attention (be, &j, n);
}
