/* Internals shared by the window-attention kernels of the CPU backend:
 * ehat-cpu-attention.c (the call, the portable kernel, AVX-512) and
 * ehat-cpu-attention-avx2.c. */
#ifndef EHAT_CPU_ATTENTION_H
#define EHAT_CPU_ATTENTION_H

#include "ehat-cpu.h"

G_BEGIN_DECLS

#define LOG2E 1.44269504088896340736

/* 2^f for |f| ≤ ½, highest power first: the x86 kernels' exp2 (degree 5,
 * fitted for relative error: 2.3e-7, like ehat_expf) */
static const float exp2_poly[6] = {
  1.327646431e-03f, 9.675540961e-03f, 5.550713465e-02f, 2.402212024e-01f,
  6.931469440e-01f, 1.000000119e+00f
};

/* One attention call: tasks are (image, window, head), each thread with
 * its own scratch. */
typedef struct
{
  const float *qkv, *bias;
  float *out;
  struct _Scratch *scratch;     /* per thread (portable kernel) */
  int h, w, c, heads, ws, wse, shift, d, dp, nq, nk, nkp, nwx, nwy;
  gboolean overlap;
  float scale;
  /* the x86 kernels (attn_fast): keys per vector, 16 (AVX-512, fp32 or
   * bf16 products) or 8 (AVX2), 0 for the portable kernel; heads per
   * task */
  int vw;
  gboolean bf16;
  int task_heads;
  /* Toeplitz bias (x86 kernels): the bias of query i and key j = (yj, xj)
   * of a kw-wide key window is etab[hd·elen + qa[i] + yj·brow + xj] */
  gboolean toeplitz;
  float *etab;
  gint32 *qa;
  int kw, brow, elen;
  /* per vector of keys (16 on AVX-512, 8 on AVX2): offsets of its first
   * and (when it straddles two rows of keys) second row run, their lanes,
   * its valid lanes */
  gint32 *voff, *voff2;
  guint16 *vm1, *vm2;
  struct _Fast *fast_scratch;   /* per thread */
} AttnJob;

/* The x86 kernels' per-thread scratch.  Per (window, head): q (scaled by
 * log2 e / √d), k and v are gathered in the layouts of the kernels, then
 * per block of up to ARB queries S = q·kᵀ + bias + mask, softmax rows,
 * O = P·v / Σ stored straight into the output rows. */
#define ARB 8

typedef struct _Fast
{
  gsize *qpos, *kpos;
  gint8 *reg;                   /* region of each token, nkp + 64 entries */
  /* q row-major: [nq][d] (fp32) or [nq][d/2] pairs (bf16) */
  float *q, *kT, *v;            /* fp32: kT [d][nkp], v [nk][dv] */
  guint32 *qw;                  /* bf16 pairs */
  guint32 *kw;                  /* bf16 pairs [dpairs][nkp] */
  guint32 *vw;                  /* bf16 pairs [nkp/2][dv] */
  float *S;                     /* [ARB][nkp] scores, then fp32 P */
  guint16 *P;                   /* [ARB][nkp] bf16 P */
  float rmax[ARB][16];          /* running row maxima of S (lanes) */
  /* q, k, v of every head of the task, gathered in one pass over the
   * window's qkv rows (each head's slot: the layouts above); q/kT/v or
   * qw/kw/vw point at the current head's */
  float *q_all, *kT_all, *v_all;
  guint32 *qw_all, *kw_all, *vw_all;
  gsize qsz, ksz, vsz;
  int nkp, dv, dq2, dpairs;
  gboolean mask;                /* the window has keys of several regions */
} Fast;

static const float zero_row[64] __attribute__ ((aligned (64)));

/* Rows of head hd: q (query t), k and v (key t; the zero row for OCAB's
 * padding and keys past nk). */
static inline const float *
q_row (const AttnJob *j, const Fast *f, int t, int hd)
{
  return j->qkv + f->qpos[t] * 3 * (gsize) j->c + (gsize) hd * j->d;
}

static inline const float *
k_row (const AttnJob *j, const Fast *f, int t, int hd)
{
  if (t >= j->nk || f->kpos[t] == G_MAXSIZE)
    return zero_row;
  return j->qkv + f->kpos[t] * 3 * (gsize) j->c + j->c + (gsize) hd * j->d;
}

static inline const float *
v_row (const AttnJob *j, const Fast *f, int t, int hd)
{
  if (t >= j->nk || f->kpos[t] == G_MAXSIZE)
    return zero_row;
  return j->qkv + f->kpos[t] * 3 * (gsize) j->c + 2 * (gsize) j->c
      + (gsize) hd * j->d;
}

#ifdef EHAT_X86_KERNELS
/* The part (q, k or v: c floats) of token t's qkv row, from L3 into L1
 * ahead of its use: the gathers read every row in three passes of a
 * third each, which the hardware prefetchers do not follow. */
#define PF 4

static inline void
prefetch_part (const AttnJob *j, const gsize *pos, int t, int n, int part)
{
  const char *p;
  if (t >= n || pos[t] == G_MAXSIZE)
    return;
  p = (const char *) (j->qkv + pos[t] * 3 * (gsize) j->c + part
      * (gsize) j->c);
  for (gsize off = 0; off < (gsize) j->c * sizeof (float); off += 64)
    _mm_prefetch (p + off, _MM_HINT_T0);
}

/* ehat-cpu-attention-avx2.c: fp32 on AVX2 + FMA, heads up to 32 wide. */
void ehat_cpu_attn_gather_avx2 (const AttnJob *j, Fast *f, int h0, int nh);
void ehat_cpu_attn_head_avx2 (const AttnJob *j, Fast *f, int hd, int slot,
    const float *bias);
#endif

G_END_DECLS

#endif /* EHAT_CPU_ATTENTION_H */
