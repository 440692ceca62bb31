/* The CUDA backend's attention operations (ehat-cuda-backend-private.h):
 * HAB's window attention and OCAB's overlapping attention (tensor cores
 * with the position bias read from its table where the index allows,
 * else the dense bias), CAB's channel attention, and DANet's position and
 * channel attention. */
#include "ehat-cuda-backend-private.h"

#include <string.h>

/* ---- relative-position indices (what upload_index keeps) ---- */

/* Frees what ri holds (ri itself goes with its cb->rel entry). */
void
rel_clear (EhatCudaBackend *cb, EhatRelIndex *ri)
{
  dev_free (cb, ri->off);
  g_free (ri->host);
  g_free (ri->host_off);
}

/* Drops what rel_bias keeps about index p (the stream is idle). */
void
rel_forget (EhatCudaBackend *cb, const void *p)
{
  EhatRelIndex *ri = cb->rel ? g_hash_table_lookup (cb->rel, p) : NULL;

  if (ri) {
    rel_clear (cb, ri);
    g_hash_table_remove (cb->rel, p);
  }
}

/* ---- attention ---- */

/* Whether index[i·nk + j] = (qoff[i] + koff[j]) mod len for all i, j with
 * both offsets in [0, len), and the offsets that make it so (koff the
 * first row, qoff the first column less index[0]); *rows: the largest
 * entry + 1, the table rows it reads.  HAT's window and OCAB indices are
 * (EHAT-SPEC.md §4: a difference of coordinates, OCAB's wrapped modulo the
 * table length); this checks the index it is given instead of assuming. */
static gboolean
rel_separable (const gint32 *index, int nq, int nk, int len, gint32 *qoff,
    gint32 *koff, int *rows)
{
  int top = 0;

  for (int j = 0; j < nk; j++)
    koff[j] = index[j];
  for (int i = 0; i < nq; i++)
    qoff[i] = ((index[(gsize) i * nk] - index[0]) % len + len) % len;
  for (int i = 0; i < nq; i++)
    for (int j = 0; j < nk; j++) {
      gint32 v = index[(gsize) i * nk + j], k = qoff[i] + koff[j];
      if (v < 0 || v >= len || (k >= len ? k - len : k) != v)
        return FALSE;
      top = MAX (top, v);
    }
  *rows = top + 1;
  return TRUE;
}

/* The separable form of index for nq×nk attention over a table of len
 * rows (per head) in *rel, its offsets uploaded at the first call (the
 * eager run before a graph is recorded); FALSE where the dense expansion
 * must be used: an index not separable or not from upload_index, or
 * EHAT_CUDA_ATTENTION=dense (read at each call; the A/B switch). */
static gboolean
rel_bias (EhatCudaBackend *cb, const float *table, const gint32 *index,
    int nq, int nk, int len, EhatCudaRelBias *rel)
{
  EhatRelIndex *ri = g_hash_table_lookup (cb->rel, index);
  cudaError_t e;

  if (!ri)
    return FALSE;
  if (ri->host) {
    ri->nq = nq;
    ri->nk = nk;
    ri->len = len;
    ri->host_off = g_new (gint32, (gsize) nq + nk);
    if (ri->n == (gsize) nq * nk && len > 0
        && rel_separable (ri->host, nq, nk, len, ri->host_off,
            ri->host_off + nq, &ri->rows)) {
      e = dev_malloc (cb, (void **) &ri->off, ((gsize) nq + nk)
          * sizeof (gint32));
      if (e == cudaSuccess)
        e = cudaMemcpyAsync (ri->off, ri->host_off, ((gsize) nq + nk)
            * sizeof (gint32), cudaMemcpyHostToDevice, cb->stream);
      if (e != cudaSuccess) {       /* the next call tries again */
        record_cuda (cb, e, "relative-position offsets");
        dev_free (cb, ri->off);
        ri->off = NULL;
        g_clear_pointer (&ri->host_off, g_free);
        return FALSE;
      }
    }
    if (!ri->off)
      g_clear_pointer (&ri->host_off, g_free);
    g_clear_pointer (&ri->host, g_free);
  }
  if (!ri->off || ri->nq != nq || ri->nk != nk || ri->len != len
      || g_strcmp0 (g_getenv ("EHAT_CUDA_ATTENTION"), "dense") == 0)
    return FALSE;
  *rel = (EhatCudaRelBias) { table, ri->off, ri->off + nq, len, ri->rows };
  return TRUE;
}

/* HAB's window attention (param: shift) or OCAB's (param: wse), on tensor
 * cores or CUDA cores (ehat_cuda_window_attention picks), with the bias
 * read from its table when the index is separable, else expanded into
 * scratch. */
static void
attention (EhatCudaBackend *cb, const float *qkv, int n, int h, int w,
    int c, int heads, int ws, int param, gboolean overlap,
    const float *table, const gint32 *index, float *out)
{
  const char *what = overlap ? "overlap attention" : "window attention";
  int nq = ws * ws, nk = overlap ? param * param : nq;
  int side = overlap ? ws + param - 1 : 2 * ws - 1;
  EhatCudaRelBias rel;
  cudaError_t e;
  float *bias;

  if (!enter (cb, what))
    return;
  if (rel_bias (cb, table, index, nq, nk, side * side, &rel)) {
    e = overlap ? ehat_cuda_overlap_attention (cb->stream, cb->dt, qkv, n, h,
        w, c, heads, ws, param, NULL, &rel, out)
        : ehat_cuda_window_attention (cb->stream, cb->dt, qkv, n, h, w, c,
        heads, ws, param, NULL, &rel, out);
    if (e != cudaErrorNotSupported) {
      record_cuda (cb, e, what);
      return;
    }
  }
  if (cb->error || !(bias = scratch (cb, SCR_BIAS, (gsize) heads * nq * nk
              * sizeof (float))))
    return;
  record_cuda (cb, ehat_cuda_expand_bias (cb->stream, table, index, heads,
          nq, nk, bias), "attention bias");
  if (!cb->error)
    record_cuda (cb, overlap ? ehat_cuda_overlap_attention (cb->stream,
            cb->dt, qkv, n, h, w, c, heads, ws, param, bias, NULL, out)
        : ehat_cuda_window_attention (cb->stream, cb->dt, qkv, n, h, w, c,
            heads, ws, param, bias, NULL, out), what);
}

void
cuda_window_attention (EhatBackend *be, const float *qkv, int n, int h,
    int w, int c, int heads, int ws, int shift, const float *table,
    const gint32 *index, float *out)
{
  attention (CB (be), qkv, n, h, w, c, heads, ws, shift, FALSE, table,
      index, out);
}

void
cuda_overlap_attention (EhatBackend *be, const float *qkv, int n, int h,
    int w, int c, int heads, int ws, int wse, const float *table,
    const gint32 *index, float *out)
{
  attention (CB (be), qkv, n, h, w, c, heads, ws, wse, TRUE, table, index,
      out);
}

/* The per-image channel scales of v: sigmoid(up(ReLU(down(mean)))) in
 * scratch; NULL after recording a failure. */
static const float *
channel_scales (EhatCudaBackend *cb, const EhatLinearW *down,
    const EhatLinearW *up, const float *v, int n, gsize hw, int c)
{
  double *sums;
  float *sc;

  if (!(sums = scratch (cb, SCR_SUMS, (gsize) n * c
              * ehat_cuda_channel_sum_parts (hw) * sizeof (double)))
      || !(sc = scratch (cb, SCR_SCALE, (gsize) n * c * sizeof (float))))
    return NULL;
  record_cuda (cb, ehat_cuda_channel_sums (cb->stream, cb->dt, v, n, hw, c,
          sums),
      "channel attention (mean)");
  if (!cb->error)
    record_cuda (cb, ehat_cuda_channel_mlp (cb->stream, sums, n, hw, c,
            down->w, down->b, down->out, up->w, up->b, sc),
        "channel attention (MLP)");
  return cb->error ? NULL : sc;
}

void
cuda_channel_attention (EhatBackend *be, const EhatLinearW *down,
    const EhatLinearW *up, float *v, int n, gsize hw, int c)
{
  EhatCudaBackend *cb = CB (be);
  const float *sc;

  if (enter (cb, "channel attention")
      && (sc = channel_scales (cb, down, up, v, n, hw, c)))
    record_cuda (cb, ehat_cuda_channel_scale (cb->stream, cb->dt, v, n, hw,
            c, sc),
        "channel attention (scale)");
}

/* CAB's channel attention with EHAT's w0·x0 and the residual sum folded
 * into the scaling pass: one pass over the maps instead of three (the
 * in-place scaling and two axpbys), and one rounding in fp16/bf16. */
void
cuda_channel_attention_add (EhatBackend *be, const EhatLinearW *down,
    const EhatLinearW *up, const float *v, int n, gsize hw, int c, float w0,
    const float *x0, float alpha, float w1, float *t)
{
  EhatCudaBackend *cb = CB (be);
  const float *sc;

  if (enter (cb, "channel attention")
      && (sc = channel_scales (cb, down, up, v, n, hw, c)))
    record_cuda (cb, ehat_cuda_channel_scale_add (cb->stream, cb->dt, v, n,
            hw, c, sc, w0, x0, alpha, w1, t),
        "channel attention (scale, sums)");
}

void
cuda_position_attention (EhatBackend *be, const float *q, const float *k,
    const float *v, int n, gsize hw, int dq, int c, float gamma, float *out)
{
  EhatCudaBackend *cb = CB (be);
  float *stats;

  if (!enter (cb, "position attention")
      || !(stats = scratch (cb, SCR_STATS, (gsize) n * hw * 2
              * sizeof (float))))
    return;
  record_cuda (cb, ehat_cuda_pam_stats (cb->stream, cb->dt, q, k, n, hw, dq,
          stats),
      "position attention (stats)");
  if (!cb->error)
    record_cuda (cb, ehat_cuda_pam_apply (cb->stream, cb->dt, q, k, v, n, hw,
            dq, c, gamma, stats, out), "position attention");
}

/* E = FᵀF per image (column-major: F is c×hw with ld c, E = F·Fᵀ), the row
 * softmax with γ folded in, then outᵀ += A·fᵀ (A row-major = Aᵀ
 * column-major, hence op T). */
void
cuda_channel_gram_attention (EhatBackend *be, const float *f, int n,
    gsize hw, int c, float gamma, float *out)
{
  EhatCudaBackend *cb = CB (be);
  long long sf = (long long) hw * c, se = (long long) c * c;
  float *e;
  void *a;

  if (!enter (cb, "channel gram attention"))
    return;
  if (hw > INT_MAX) {
    record_msg (cb, EHAT_ERROR_INVALID_ARGUMENT,
        "channel attention: map too large");
    return;
  }
  if (!(e = scratch (cb, SCR_GRAM, (gsize) n * c * c * sizeof (float))))
    return;
  a = e;
  if (cb->dt != EHAT_CUDA_F32 && !(a = scratch (cb, SCR_GRAM_T, (gsize) n * c
              * c * cb->parent.act_bytes)))
    return;
  /* the Gram matrices in fp32 whatever the storage (sums over hw tokens) */
  gemm (cb, CUBLAS_OP_N, CUBLAS_OP_T, c, c, (int) hw, f, c, f, c, 0.0f, e,
      CUDA_R_32F, c, sf, sf, se, n, "channel attention Gram GEMM");
  if (!cb->error)
    record_cuda (cb, ehat_cuda_gram_softmax (cb->stream, cb->dt, e, n, c,
            gamma, a), "channel attention softmax");
  gemm (cb, CUBLAS_OP_T, CUBLAS_OP_N, c, (int) hw, c, a, c, f, c, 1.0f, out,
      cb->ct, c, se, sf, sf, n, "channel attention GEMM");
}
