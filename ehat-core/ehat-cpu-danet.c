/* DANet's position and channel attention (Fu et al. 2019; EHAT-SPEC.md §6)
 * for the CPU backend.
 *
 * Position attention is global over the tile (hw × hw scores), so it is
 * streamed as flash attention does: blocks of queries against blocks of
 * keys with a running maximum and sum, never holding more than QB×KB
 * scores per thread. */
#include "ehat-cpu.h"

#include <cblas.h>

#define QB 32                   /* queries per task */
#define KB 256                  /* keys per streamed block */

EHAT_CLONES static void
pam_block (const float *q, const float *k, const float *v, gsize hw, int dq,
    int c, int rows, float gamma, float *S, float *acc, float *mrow,
    float *lrow, float *out)
{
  for (int r = 0; r < rows; r++) {
    mrow[r] = -G_MAXFLOAT;
    lrow[r] = 0.0f;
  }
  memset (acc, 0, (gsize) rows * c * sizeof (float));

  for (gsize j0 = 0; j0 < hw; j0 += KB) {
    int kn = (int) MIN ((gsize) KB, hw - j0);
    for (int r = 0; r < rows; r++) {
      const float *qr = q + (gsize) r * dq;
      float *s = S + (gsize) r * KB, mx = mrow[r], sum, corr;
      for (int j = 0; j < kn; j++) {
        const float *kj = k + (j0 + j) * dq;
        float d = 0.0f;
#pragma omp simd reduction(+:d)
        for (int e = 0; e < dq; e++)
          d += qr[e] * kj[e];
        s[j] = d;
        mx = d > mx ? d : mx;
      }
      corr = ehat_expf (mrow[r] - mx);
      sum = ehat_exp_shifted (s, kn, mx);
      lrow[r] = lrow[r] * corr + sum;
      mrow[r] = mx;
      float *ar = acc + (gsize) r * c;
#pragma omp simd
      for (int e = 0; e < c; e++)
        ar[e] *= corr;
      for (int j = 0; j < kn; j++) {
        const float *vj = v + (j0 + j) * c;
        float p = s[j];
#pragma omp simd
        for (int e = 0; e < c; e++)
          ar[e] += p * vj[e];
      }
    }
  }
  for (int r = 0; r < rows; r++) {
    float scale = gamma / lrow[r];
#pragma omp simd
    for (int e = 0; e < c; e++)
      out[(gsize) r * c + e] += scale * acc[(gsize) r * c + e];
  }
}

typedef struct
{
  const float *q, *k, *v, *f;
  float *out, *e;
  gsize hw, blocks;
  int dq, c;
  float gamma;
  float **S, **acc;             /* per thread */
} DanetJob;

static void
pam_tasks (gpointer data, gsize begin, gsize end, int thread)
{
  const DanetJob *j = data;
  float mrow[QB], lrow[QB];

  for (gsize task = begin; task < end; task++) {
    gsize i = task / j->blocks, b = task % j->blocks;
    gsize base = i * j->hw, r0 = b * QB;
    int rows = (int) MIN ((gsize) QB, j->hw - r0);
    pam_block (j->q + (base + r0) * j->dq, j->k + base * j->dq,
        j->v + base * j->c, j->hw, j->dq, j->c, rows, j->gamma,
        j->S[thread], j->acc[thread], mrow, lrow, j->out + (base + r0) * j->c);
  }
}

void
ehat_cpu_position_attention (EhatBackend *be, const float *q, const float *k,
    const float *v, int n, gsize hw, int dq, int c, float gamma, float *out)
{
  EhatCpuBackend *cpu = (EhatCpuBackend *) be;
  DanetJob j = { q, k, v, NULL, out, NULL, hw, (hw + QB - 1) / QB, dq, c,
    gamma, g_new (float *, cpu->n_threads), g_new (float *, cpu->n_threads)
  };

  for (int t = 0; t < cpu->n_threads; t++) {
    j.S[t] = g_new (float, (gsize) QB * KB);
    j.acc[t] = g_new (float, (gsize) QB * c);
  }
  ehat_pool_parallel_for (cpu->pool, n * j.blocks, 1, pam_tasks, &j);
  for (int t = 0; t < cpu->n_threads; t++) {
    g_free (j.S[t]);
    g_free (j.acc[t]);
  }
  g_free (j.S);
  g_free (j.acc);
}

/* E[c1][c2] = Σ_tokens f[t][c1]·f[t][c2] for a block of 16 rows of E
 * (OpenBLAS itself runs single-threaded, see the backend). */
static void
gram_rows (gpointer data, gsize begin, gsize end, int thread)
{
  const DanetJob *j = data;
  cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, (int) (end - begin),
      j->c, (int) j->hw, 1.0f, j->f + begin, j->c, j->f, j->c, 0.0f,
      j->e + begin * j->c, j->c);
}

/* out[t] += Σ_c2 (γ·A)[c1][c2]·f[t][c2] for a block of tokens */
static void
cam_apply (gpointer data, gsize begin, gsize end, int thread)
{
  const DanetJob *j = data;
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, (int) (end - begin),
      j->c, j->c, 1.0f, j->f + begin * j->c, j->c, j->e, j->c, 1.0f,
      j->out + begin * j->c, j->c);
}

void
ehat_cpu_channel_gram_attention (EhatBackend *be, const float *f, int n,
    gsize hw, int c, float gamma, float *out)
{
  EhatPool *pool = ((EhatCpuBackend *) be)->pool;
  g_autofree float *e = g_new (float, (gsize) c * c);

  for (int i = 0; i < n; i++) {
    DanetJob j = { .f = f + (gsize) i * hw * c, .out = out + (gsize) i * hw * c,
      .e = e, .hw = hw, .c = c
    };

    ehat_pool_parallel_for (pool, c, 16, gram_rows, &j);
    /* A = softmax_row(max_row(E) − E), in the original's form */
    for (int r = 0; r < c; r++) {
      float *er = e + (gsize) r * c, mx = -G_MAXFLOAT, mx2 = -G_MAXFLOAT,
          sum = 0.0f;
      for (int k = 0; k < c; k++)
        mx = er[k] > mx ? er[k] : mx;
      for (int k = 0; k < c; k++) {
        er[k] = mx - er[k];
        mx2 = er[k] > mx2 ? er[k] : mx2;
      }
      for (int k = 0; k < c; k++)
        sum += (er[k] = expf (er[k] - mx2));
      for (int k = 0; k < c; k++)
        er[k] *= gamma / sum;
    }
    ehat_pool_parallel_for (pool, hw, 256, cam_apply, &j);
  }
}
