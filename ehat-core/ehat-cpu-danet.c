/* DANet's position and channel attention (Fu et al. 2019; EHAT-SPEC.md §6)
 * for the CPU backend.
 *
 * Position attention is global over the tile (hw × hw scores), so it is
 * streamed as flash attention does: blocks of queries against blocks of
 * keys with a running maximum and sum, never holding more than QB×KB
 * scores per thread. */
#include "ehat-cpu.h"

#include <cblas.h>
#include <omp.h>

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
      float *s = S + (gsize) r * KB, mx = mrow[r], sum = 0.0f, corr;
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
#pragma omp simd reduction(+:sum)
      for (int j = 0; j < kn; j++) {
        s[j] = ehat_expf (s[j] - mx);
        sum += s[j];
      }
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

void
ehat_cpu_position_attention (EhatBackend *be, const float *q, const float *k,
    const float *v, int n, gsize hw, int dq, int c, float gamma, float *out)
{
  gsize blocks = (hw + QB - 1) / QB;

#pragma omp parallel num_threads(((EhatCpuBackend *) be)->n_threads)
  {
    float *S = g_new (float, (gsize) QB * KB);
    float *acc = g_new (float, (gsize) QB * c);
    float mrow[QB], lrow[QB];

#pragma omp for schedule(dynamic, 1) collapse(2)
    for (int i = 0; i < n; i++) {
      for (gsize b = 0; b < blocks; b++) {
        gsize base = (gsize) i * hw, r0 = b * QB;
        int rows = (int) MIN ((gsize) QB, hw - r0);
        pam_block (q + (base + r0) * dq, k + base * dq, v + base * c, hw, dq,
            c, rows, gamma, S, acc, mrow, lrow, out + (base + r0) * c);
      }
    }
    g_free (S);
    g_free (acc);
  }
}

void
ehat_cpu_channel_gram_attention (EhatBackend *be, const float *f, int n,
    gsize hw, int c, float gamma, float *out)
{
  int nt = ((EhatCpuBackend *) be)->n_threads;
  g_autofree float *e = g_new (float, (gsize) c * c);

  for (int i = 0; i < n; i++) {
    const float *fi = f + (gsize) i * hw * c;
    float *oi = out + (gsize) i * hw * c;

    /* E[c1][c2] = Σ_tokens f[t][c1]·f[t][c2], rows of E split over the
     * threads (OpenBLAS itself runs single-threaded, see the backend). */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int c0 = 0; c0 < c; c0 += 16) {
      int cn = MIN (16, c - c0);
      cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, cn, c, (int) hw,
          1.0f, fi + c0, c, fi, c, 0.0f, e + (gsize) c0 * c, c);
    }
    /* A = softmax_row(max_row(E) − E), in the original's form */
    for (int r = 0; r < c; r++) {
      float *er = e + (gsize) r * c, mx = -G_MAXFLOAT, mx2 = -G_MAXFLOAT,
          sum = 0.0f;
      for (int j = 0; j < c; j++)
        mx = er[j] > mx ? er[j] : mx;
      for (int j = 0; j < c; j++) {
        er[j] = mx - er[j];
        mx2 = er[j] > mx2 ? er[j] : mx2;
      }
      for (int j = 0; j < c; j++)
        sum += (er[j] = expf (er[j] - mx2));
      for (int j = 0; j < c; j++)
        er[j] *= gamma / sum;
    }
    /* out[t] += Σ_c2 (γ·A)[c1][c2]·f[t][c2]: rows split over threads */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (gsize t0 = 0; t0 < hw; t0 += 256) {
      int tn = (int) MIN ((gsize) 256, hw - t0);
      cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, tn, c, c, 1.0f,
          fi + t0 * c, c, e, c, 1.0f, oi + t0 * c, c);
    }
  }
}
