/* HAT / EHAT forward pass (EHAT-SPEC.md §1–§5), backend independent.
 *
 * Activations live in one arena per input size, carved into slots whose
 * lifetimes never overlap wrongly (see plan_arena); the backend only sees
 * pointers into it.  HAT runs the same code as EHAT with w0 = 0 and w1 = 1,
 * skipping the terms that are then zero. */
#include "ehat-network.h"

#include "ehat-model-private.h"

#include <math.h>
#include <string.h>

typedef struct
{
  EhatNormW norm1, norm2;
  EhatLinearW qkv, proj, fc1, fc2;
  float *bias_table;            /* relative_position_bias_table [L][heads] */
  /* HAB only */
  EhatConvW cab0, cab2;
  EhatLinearW ca_down, ca_up;
} EhatBlockW;

typedef struct
{
  EhatBlockW *blocks;
  int n_blocks;
  EhatBlockW ocab;
  EhatConvW conv;
} EhatGroupW;

struct _EhatNetwork
{
  EhatModel *model;
  EhatBackend *be;
  EhatConfig cfg;

  EhatConvW conv_first;
  EhatNormW patch_norm;
  float *ape;
  EhatGroupW *groups;
  EhatNormW norm;
  EhatConvW conv_after_body, conv_before_upsample, upsample[2], conv_last;
  int n_upsample, up_factor;

  const float *w0, *w1;         /* branch weights (host), NULL for HAT */

  /* DANet (optional) */
  gboolean danet;
  EhatLinearW pam_q, pam_k, pam_v;
  float gamma_p, gamma_c;

  /* query×key → bias-table row, shared by all blocks of a kind */
  gint32 *sa_index, *oca_index;

  /* Every backend allocation, freed together; borrowed weights apart. */
  GPtrArray *allocs;
  GPtrArray *borrowed;
  /* linear weights the backend prepared (EhatLinearW *, inside net) */
  GPtrArray *prepared;

  /* Activation arena for the current (n, H, W). */
  float *arena;
  gsize arena_floats;
  gsize planned_floats;
};

/* ---- relative positions (EHAT-SPEC.md §4) ---- */

int
ehat_rel_index_sa (int ws, int i, int j)
{
  int yi = i / ws, xi = i % ws, yj = j / ws, xj = j % ws;
  return (yi - yj + ws - 1) * (2 * ws - 1) + (xi - xj + ws - 1);
}

int
ehat_rel_index_oca (int ws, int wse, int i, int j)
{
  int yi = i / ws, xi = i % ws, yj = j / wse, xj = j % wse;
  int side = ws + wse - 1;
  int len = side * side;
  int idx = (yj - yi + ws - wse + 1) * side + (xj - xi + ws - wse + 1);
  /* The original indexes with negative values, counted from the end. */
  return ((idx % len) + len) % len;
}

gint32 *
ehat_rel_index_table (int ws, int wse, gboolean overlap)
{
  int nq = ws * ws, nk = overlap ? wse * wse : nq;
  gint32 *idx = g_new (gint32, (gsize) nq * nk);

  for (int i = 0; i < nq; i++)
    for (int j = 0; j < nk; j++)
      idx[(gsize) i * nk + j] = overlap ? ehat_rel_index_oca (ws, wse, i, j)
          : ehat_rel_index_sa (ws, i, j);
  return idx;
}

/* ---- weight upload ---- */

static float *
track (EhatNetwork *net, float *p)
{
  if (p)
    g_ptr_array_add (net->allocs, p);
  return p;
}

static gboolean
up_vec (EhatNetwork *net, float **dst, const char *name, gsize n,
    GError **error)
{
  const float *host = ehat_model_get_f32 (net->model, name);
  if (!host) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_TENSOR,
        "internal: tensor '%s' not loaded", name);
    return FALSE;
  }
  *dst = net->be->ops->borrow (net->be, host, n, error);
  if (*dst)
    g_ptr_array_add (net->borrowed, *dst);
  return *dst != NULL;
}

static gboolean
up_conv (EhatNetwork *net, EhatConvW *cw, const char *prefix, int cin,
    int cout, int k, GError **error)
{
  g_autofree char *wn = g_strdup_printf ("%s.weight", prefix);
  g_autofree char *bn = g_strdup_printf ("%s.bias", prefix);
  const float *w = ehat_model_get_f32 (net->model, wn);
  if (!w) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_TENSOR,
        "internal: tensor '%s' not loaded", wn);
    return FALSE;
  }
  cw->cin = cin;
  cw->cout = cout;
  cw->k = k;
  cw->w = track (net, net->be->ops->upload_conv (net->be, w, cout, cin, k,
          error));
  if (!cw->w)
    return FALSE;
  return up_vec (net, &cw->b, bn, cout, error);
}

/* A linear layer read as it is: channel attention's squeeze and
 * excitation, which no GEMM computes. */
static gboolean
up_linear_plain (EhatNetwork *net, EhatLinearW *lw, const char *prefix,
    int in, int out, GError **error)
{
  g_autofree char *wn = g_strdup_printf ("%s.weight", prefix);
  g_autofree char *bn = g_strdup_printf ("%s.bias", prefix);
  lw->in = in;
  lw->out = out;
  lw->prepared = NULL;
  return up_vec (net, &lw->w, wn, (gsize) in * out, error)
      && up_vec (net, &lw->b, bn, out, error);
}

/* A linear layer for the GEMM operations (linear, norm_linear, mlp),
 * prepared by the backend. */
static gboolean
up_linear (EhatNetwork *net, EhatLinearW *lw, const char *prefix, int in,
    int out, GError **error)
{
  float *w;

  if (!up_linear_plain (net, lw, prefix, in, out, error))
    return FALSE;
  if (!net->be->ops->prepare_linear)
    return TRUE;
  w = lw->w;
  if (!net->be->ops->prepare_linear (net->be, lw, error))
    return FALSE;
  g_ptr_array_add (net->prepared, lw);
  /* the backend kept only its own copy and gave w back */
  if (!lw->w)
    g_ptr_array_remove_fast (net->borrowed, w);
  return TRUE;
}

static gboolean
up_norm (EhatNetwork *net, EhatNormW *nw, const char *prefix, int c,
    GError **error)
{
  g_autofree char *wn = g_strdup_printf ("%s.weight", prefix);
  g_autofree char *bn = g_strdup_printf ("%s.bias", prefix);
  return up_vec (net, &nw->w, wn, c, error)
      && up_vec (net, &nw->b, bn, c, error);
}

static gboolean
up_bias (EhatNetwork *net, EhatBlockW *bw, const char *prefix, int heads,
    int ws, int wse, gboolean overlap, GError **error)
{
  g_autofree char *tn =
      g_strdup_printf ("%s.relative_position_bias_table", prefix);
  int side = overlap ? ws + wse - 1 : 2 * ws - 1;
  return up_vec (net, &bw->bias_table, tn, (gsize) side * side * heads,
      error);
}

/* The relative-position indices of EHAT-SPEC.md §4, once per network. */
static gint32 *
up_index (EhatNetwork *net, int ws, int wse, gboolean overlap, GError **error)
{
  int nq = ws * ws, nk = overlap ? wse * wse : nq;
  g_autofree gint32 *idx = ehat_rel_index_table (ws, wse, overlap);
  gint32 *dev;

  dev = net->be->ops->upload_index (net->be, idx, (gsize) nq * nk, error);
  if (dev)
    g_ptr_array_add (net->allocs, dev);
  return dev;
}

static gboolean
up_attn_block (EhatNetwork *net, EhatBlockW *bw, const char *prefix,
    const char *attn_prefix, int heads, gboolean overlap, GError **error)
{
  const EhatConfig *c = &net->cfg;
  int C = c->embed_dim, hid = c->mlp_hidden;
  g_autofree char *n1 = g_strdup_printf ("%s.norm1", prefix);
  g_autofree char *n2 = g_strdup_printf ("%s.norm2", prefix);
  g_autofree char *qkv = g_strdup_printf ("%s.qkv", attn_prefix);
  g_autofree char *proj = g_strdup_printf ("%s.proj", attn_prefix);
  g_autofree char *fc1 = g_strdup_printf ("%s.mlp.fc1", prefix);
  g_autofree char *fc2 = g_strdup_printf ("%s.mlp.fc2", prefix);

  return up_norm (net, &bw->norm1, n1, C, error)
      && up_norm (net, &bw->norm2, n2, C, error)
      && up_linear (net, &bw->qkv, qkv, C, 3 * C, error)
      && up_linear (net, &bw->proj, proj, C, C, error)
      && up_linear (net, &bw->fc1, fc1, C, hid, error)
      && up_linear (net, &bw->fc2, fc2, hid, C, error)
      && up_bias (net, bw, attn_prefix, heads, c->window_size,
      c->overlap_window, overlap, error);
}

/* A 1×1 conv [out, in, 1, 1] is a linear layer [out, in]. */
static gboolean
up_block (EhatNetwork *net, EhatBlockW *bw, int l, int i, GError **error)
{
  const EhatConfig *c = &net->cfg;
  int C = c->embed_dim, cm = C / c->compress_ratio, sq = C / c->squeeze_factor;
  g_autofree char *p =
      g_strdup_printf ("layers.%d.residual_group.blocks.%d", l, i);
  g_autofree char *ap = g_strconcat (p, ".attn", NULL);
  g_autofree char *cab0 = g_strconcat (p, ".conv_block.cab.0", NULL);
  g_autofree char *cab2 = g_strconcat (p, ".conv_block.cab.2", NULL);
  g_autofree char *ca1 = g_strconcat (p, ".conv_block.cab.3.attention.1", NULL);
  g_autofree char *ca3 = g_strconcat (p, ".conv_block.cab.3.attention.3", NULL);

  return up_attn_block (net, bw, p, ap, c->num_heads[l], FALSE, error)
      && up_conv (net, &bw->cab0, cab0, C, cm, 3, error)
      && up_conv (net, &bw->cab2, cab2, cm, C, 3, error)
      && up_linear_plain (net, &bw->ca_down, ca1, C, sq, error)
      && up_linear_plain (net, &bw->ca_up, ca3, sq, C, error);
}

EhatNetwork *
ehat_network_new (EhatModel *model, EhatBackend *be, GError **error)
{
  EhatNetwork *net = g_new0 (EhatNetwork, 1);
  const EhatConfig *c = ehat_model_get_config (model);
  int C = c->embed_dim;
  gboolean ok;

  net->model = ehat_model_ref (model);
  net->be = be;
  net->cfg = *c;
  net->allocs = g_ptr_array_new ();
  net->borrowed = g_ptr_array_new ();
  net->prepared = g_ptr_array_new ();

  ok = (net->sa_index = up_index (net, c->window_size, 0, FALSE, error))
      && (net->oca_index = up_index (net, c->window_size, c->overlap_window,
          TRUE, error))
      && up_conv (net, &net->conv_first, "conv_first", 3, C, 3, error)
      && up_norm (net, &net->patch_norm, "patch_embed.norm", C, error)
      && up_norm (net, &net->norm, "norm", C, error)
      && up_conv (net, &net->conv_after_body, "conv_after_body", C, C, 3,
      error)
      && up_conv (net, &net->conv_before_upsample, "conv_before_upsample.0",
      C, 64, 3, error)
      && up_conv (net, &net->conv_last, "conv_last", 64, 3, 3, error);
  if (ok && c->ape)
    ok = up_vec (net, &net->ape, "absolute_pos_embed",
        (gsize) c->ape_tokens * C, error);
  if (ok && c->danet) {
    const float *gp = ehat_model_get_f32 (model, "danet.pam.gamma");
    const float *gc = ehat_model_get_f32 (model, "danet.cam.gamma");
    net->danet = TRUE;
    if (!gp || !gc)
      g_set_error (error, EHAT_ERROR, EHAT_ERROR_TENSOR,
          "internal: DANet gammas not loaded");
    ok = gp && gc
        && up_linear (net, &net->pam_q, "danet.pam.query_conv", C, C / 8,
        error)
        && up_linear (net, &net->pam_k, "danet.pam.key_conv", C, C / 8, error)
        && up_linear (net, &net->pam_v, "danet.pam.value_conv", C, C, error);
    if (ok) {
      net->gamma_p = gp[0];
      net->gamma_c = gc[0];
    }
  }

  if (ok) {
    if (c->upscale == 4) {
      net->n_upsample = 2;
      net->up_factor = 2;
    } else {
      net->n_upsample = 1;
      net->up_factor = c->upscale;
    }
    for (int u = 0; ok && u < net->n_upsample; u++) {
      g_autofree char *p = g_strdup_printf ("upsample.%d", 2 * u);
      ok = up_conv (net, &net->upsample[u], p, 64,
          64 * net->up_factor * net->up_factor, 3, error);
    }
  }

  net->groups = g_new0 (EhatGroupW, c->n_groups);
  for (int l = 0; ok && l < c->n_groups; l++) {
    EhatGroupW *g = &net->groups[l];
    g_autofree char *op =
        g_strdup_printf ("layers.%d.residual_group.overlap_attn", l);
    g_autofree char *cp = g_strdup_printf ("layers.%d.conv", l);

    g->n_blocks = c->depths[l];
    g->blocks = g_new0 (EhatBlockW, g->n_blocks);
    for (int i = 0; ok && i < g->n_blocks; i++)
      ok = up_block (net, &g->blocks[i], l, i, error);
    ok = ok && up_attn_block (net, &g->ocab, op, op, c->num_heads[l], TRUE,
        error)
        && up_conv (net, &g->conv, cp, C, C, 3, error);
  }

  if (ok && c->arch == EHAT_ARCH_EHAT) {
    net->w0 = ehat_model_get_f32 (model, "__branchattentionmodule__.weight_0");
    net->w1 = ehat_model_get_f32 (model, "__branchattentionmodule__.weight_1");
    if (!net->w0 || !net->w1) {
      g_set_error (error, EHAT_ERROR, EHAT_ERROR_TENSOR,
          "internal: branch weights not loaded");
      ok = FALSE;
    }
  }

  if (!ok) {
    ehat_network_free (net);
    return NULL;
  }
  return net;
}

void
ehat_network_free (EhatNetwork *net)
{
  if (!net)
    return;
  if (net->arena)
    net->be->ops->free (net->be, net->arena);
  for (guint i = 0; i < net->allocs->len; i++)
    net->be->ops->free (net->be, g_ptr_array_index (net->allocs, i));
  g_ptr_array_free (net->allocs, TRUE);
  for (guint i = 0; net->be->ops->release_linear && i < net->prepared->len;
      i++)
    net->be->ops->release_linear (net->be,
        g_ptr_array_index (net->prepared, i));
  g_ptr_array_free (net->prepared, TRUE);
  for (guint i = 0; i < net->borrowed->len; i++)
    net->be->ops->unborrow (net->be, g_ptr_array_index (net->borrowed, i));
  g_ptr_array_free (net->borrowed, TRUE);
  if (net->groups) {
    for (int l = 0; l < net->cfg.n_groups; l++)
      g_free (net->groups[l].blocks);
    g_free (net->groups);
  }
  ehat_model_unref (net->model);
  g_free (net);
}

gsize
ehat_network_get_workspace_bytes (EhatNetwork *net)
{
  return net->arena_floats * sizeof (float);
}

/* ---- activation arena ----
 *
 * Body (m tokens of C): slots X0, T, Y, TIN, Z, N, A of m·C floats, then BIG
 * of m·max(3C, hidden, C/cr) for qkv, the MLP hidden layer and the CAB's
 * middle.  The network input (m·3) sits in T before T is first written.
 * Tail: B (= conv_after_body output) overwrites X0 in place; then U1, and
 * each upsampling stage's output, follow it; the 3-channel output goes to
 * offset 0, which only B and U1 (dead by then) used. */
typedef struct
{
  float *x0, *t, *y, *tin, *z, *n, *a, *big;
  float *u[3];                  /* tail stages */
  float *out;
} EhatSlots;

static gsize
plan_arena (const EhatNetwork *net, gsize m, EhatSlots *s, float *base)
{
  const EhatConfig *c = &net->cfg;
  gsize mc = m * c->embed_dim;
  gsize wide = MAX (3 * c->embed_dim, c->mlp_hidden);
  gsize off = 0, body, tail, pix = m;
  float *b = base;

  wide = MAX (wide, (gsize) (c->embed_dim / c->compress_ratio));
#define SLOT(field, size) do { if (s) s->field = ehat_act_at (net->be, b, off); off += (size); } while (0)
  SLOT (x0, mc);
  SLOT (t, MAX (mc, m * 3));
  SLOT (y, mc);
  SLOT (tin, mc);
  SLOT (z, mc);
  SLOT (n, mc);
  SLOT (a, mc);
  SLOT (big, m * wide);
  body = off;

  off = mc;                     /* B lives in X0 */
  SLOT (u[0], m * 64);
  for (int u = 0; u < net->n_upsample; u++) {
    pix *= net->up_factor * net->up_factor;
    SLOT (u[u + 1], pix * 64);
  }
  tail = off;
  g_assert (pix * 3 <= mc + m * 64);
  if (s)
    s->out = b;
#undef SLOT
  return MAX (body, tail);
}

/* Floats (the unit of alloc) holding `elems` activation elements. */
static gsize
arena_floats (const EhatNetwork *net, gsize elems)
{
  return (elems * (gsize) net->be->act_bytes + sizeof (float) - 1)
      / sizeof (float);
}

/* The size a pass over a width×height input runs at: the input padded to
 * the window grid, as the reference pads it, or, for a model with an
 * absolute position embedding, to the embedding's grid (smaller inputs are
 * padded up to it).  FALSE when the input is larger than that grid. */
static gboolean
padded_size (const EhatConfig *c, int width, int height, int *W, int *H)
{
  int ws = c->window_size;

  *H = (height + ws - 1) / ws * ws;
  *W = (width + ws - 1) / ws * ws;
  if (!c->ape)
    return TRUE;
  if (*H > c->ape_size || *W > c->ape_size)
    return FALSE;
  *H = *W = c->ape_size;
  return TRUE;
}

/* Floats of activation arena a forward pass on n images of width×height
 * needs (what ehat_network_forward() would allocate). */
gsize
ehat_network_estimate_floats (const EhatNetwork *net, int n, int width,
    int height)
{
  int H, W;

  /* (an input too large for an embedding costs what its own size would:
   * the forward refuses it) */
  padded_size (&net->cfg, width, height, &W, &H);
  return arena_floats (net, plan_arena (net, (gsize) n * H * W, NULL, NULL));
}

/* ---- forward ---- */

typedef struct
{
  const float *w0, *w1;
  int i0, i1;
} EhatBranch;

/* The next branch weight (EHAT-SPEC.md §5); HAT: the constants 0 and 1. */
static inline float
next_w0 (EhatBranch *br)
{
  return br->w0 ? br->w0[br->i0++] : 0.0f;
}

static inline float
next_w1 (EhatBranch *br)
{
  return br->w1 ? br->w1[br->i1++] : 1.0f;
}

/* y = act(LN(x)·Wᵀ + b) for a LayerNorm whose output has no other reader:
 * fused where the backend can, else through tmp. */
static void
norm_linear (EhatBackend *be, const EhatNormW *nw, const EhatLinearW *lw,
    const float *x, gsize m, float *tmp, float *y, EhatAct act)
{
  if (be->ops->norm_linear) {
    be->ops->norm_linear (be, nw, lw, x, m, y, act);
    return;
  }
  be->ops->layernorm (be, nw, x, m, lw->in, tmp);
  be->ops->linear (be, lw, tmp, m, y, act, 0.0f);
}

/* t = w1·t + MLP(LayerNorm(t)), then acc += acc_w·t when acc is set */
static void
attention_mlp_tail (EhatNetwork *net, const EhatBlockW *bw, EhatSlots *s,
    gsize m, float w1, float *acc, float acc_w)
{
  EhatBackend *be = net->be;

  if (be->ops->mlp) {
    be->ops->mlp (be, &bw->norm2, &bw->fc1, &bw->fc2, s->t, m, s->t, w1,
        acc, acc_w);
    return;
  }
  norm_linear (be, &bw->norm2, &bw->fc1, s->t, m, s->n, s->big,
      EHAT_ACT_GELU);
  be->ops->linear (be, &bw->fc2, s->big, m, s->t, EHAT_ACT_NONE, w1);
  if (acc)
    be->ops->axpby (be, acc, acc_w, s->t, 1.0f, m * net->cfg.embed_dim);
}

/* acc: EHAT's z (acc += w0·output), NULL for HAT */
static void
hab (EhatNetwork *net, const EhatBlockW *bw, EhatSlots *s, int nimg, int H,
    int W, int heads, int shift, EhatBranch *br, float *acc)
{
  EhatBackend *be = net->be;
  const EhatConfig *c = &net->cfg;
  int C = c->embed_dim;
  gsize m = (gsize) nimg * H * W;
  float w0, w1;

  be->ops->layernorm (be, &bw->norm1, s->t, m, C, s->n);

  /* CAB → a (the CAB's middle map lives in big) */
  be->ops->conv (be, &bw->cab0, s->n, nimg, H, W, s->big, EHAT_ACT_GELU,
      NULL, 0.0f, 1);
  be->ops->conv (be, &bw->cab2, s->big, nimg, H, W, s->a, EHAT_ACT_NONE,
      NULL, 0.0f, 1);
  /* t = w1·t + conv_scale·(CA(a) + w0·n) (EHAT; HAT: no w0·n); the
   * attention branch is added below */
  w0 = br->w0 ? next_w0 (br) : 0.0f;
  w1 = next_w1 (br);
  if (be->ops->channel_attention_add) {
    be->ops->channel_attention_add (be, &bw->ca_down, &bw->ca_up, s->a, nimg,
        (gsize) H * W, C, w0, br->w0 ? s->n : NULL, c->conv_scale, w1, s->t);
  } else {
    be->ops->channel_attention (be, &bw->ca_down, &bw->ca_up, s->a, nimg,
        (gsize) H * W, C);
    if (br->w0)
      be->ops->axpby (be, s->a, w0, s->n, 1.0f, m * C);
    be->ops->axpby (be, s->t, c->conv_scale, s->a, w1, m * C);
  }
  be->ops->linear (be, &bw->qkv, s->n, m, s->big, EHAT_ACT_NONE, 0.0f);
  be->ops->window_attention (be, s->big, nimg, H, W, C, heads,
      c->window_size, shift, bw->bias_table, net->sa_index, s->a);
  be->ops->linear (be, &bw->proj, s->a, m, s->t, EHAT_ACT_NONE, 1.0f);

  w1 = next_w1 (br);
  /* EHAT: the group's sum of block outputs, z += w0·t */
  attention_mlp_tail (net, bw, s, m, w1, acc, acc ? next_w0 (br) : 0.0f);
}

static void
ocab (EhatNetwork *net, const EhatBlockW *bw, EhatSlots *s, int nimg, int H,
    int W, int heads)
{
  EhatBackend *be = net->be;
  const EhatConfig *c = &net->cfg;
  int C = c->embed_dim;
  gsize m = (gsize) nimg * H * W;

  norm_linear (be, &bw->norm1, &bw->qkv, s->t, m, s->n, s->big,
      EHAT_ACT_NONE);
  be->ops->overlap_attention (be, s->big, nimg, H, W, C, heads,
      c->window_size, c->overlap_window, bw->bias_table, net->oca_index,
      s->a);
  be->ops->linear (be, &bw->proj, s->a, m, s->t, EHAT_ACT_NONE, 1.0f);
  attention_mlp_tail (net, bw, s, m, 1.0f, NULL, 0.0f);
}

static void
features (EhatNetwork *net, EhatSlots *s, int nimg, int H, int W,
    EhatBranch *br)
{
  EhatBackend *be = net->be;
  const EhatConfig *c = &net->cfg;
  int C = c->embed_dim;
  gsize m = (gsize) nimg * H * W, mc = m * C;
  gboolean ehat = br->w0 != NULL;

  be->ops->layernorm (be, &net->patch_norm, s->x0, m, C, s->t);
  if (net->ape) {
    float w1 = next_w1 (br);
    for (int i = 0; i < nimg; i++)
      be->ops->axpby (be, ehat_act_at (be, s->t, (gsize) i * H * W * C), w1,
          net->ape, 1.0f,
          (gsize) H * W * C);
  }
  if (ehat)
    be->ops->axpby (be, s->y, next_w0 (br), s->t, 0.0f, mc);

  for (int l = 0; l < c->n_groups; l++) {
    const EhatGroupW *g = &net->groups[l];
    float *tmp;

    be->ops->axpby (be, s->tin, 1.0f, s->t, 0.0f, mc);
    if (ehat)
      be->ops->axpby (be, s->z, next_w0 (br), s->t, 0.0f, mc);
    for (int i = 0; i < g->n_blocks; i++) {
      hab (net, &g->blocks[i], s, nimg, H, W, c->num_heads[l],
          (i % 2) ? c->window_size / 2 : 0, br, ehat ? s->z : NULL);
    }
    if (ehat)
      be->ops->axpby (be, s->t, 1.0f, s->z, 1.0f, mc);
    ocab (net, &g->ocab, s, nimg, H, W, c->num_heads[l]);

    /* t = conv(t) + w1·t_in, written to n and swapped in */
    be->ops->conv (be, &g->conv, s->t, nimg, H, W, s->n, EHAT_ACT_NONE,
        s->tin, next_w1 (br), 1);
    tmp = s->t;
    s->t = s->n;
    s->n = tmp;
    if (ehat)
      be->ops->axpby (be, s->y, next_w0 (br), s->t, 1.0f, mc);
  }
  if (ehat)
    be->ops->axpby (be, s->t, 1.0f, s->y, 1.0f, mc);
  be->ops->layernorm (be, &net->norm, s->t, m, C, s->t);
}

/* f + γp·PAM(f) + γc·CAM(f), written to n and swapped in.  q, k (C/8
 * wide) and v (C wide) fit in big, which is at least 3C wide. */
static void
danet (EhatNetwork *net, EhatSlots *s, int nimg, int H, int W)
{
  EhatBackend *be = net->be;
  int C = net->cfg.embed_dim, cq = C / 8;
  gsize hw = (gsize) H * W, m = nimg * hw;
  float *q = s->big, *k = ehat_act_at (be, q, m * cq);
  float *v = ehat_act_at (be, k, m * cq), *tmp;

  be->ops->axpby (be, s->n, 1.0f, s->t, 0.0f, m * C);
  if (net->gamma_p != 0.0f) {
    be->ops->linear (be, &net->pam_q, s->t, m, q, EHAT_ACT_NONE, 0.0f);
    be->ops->linear (be, &net->pam_k, s->t, m, k, EHAT_ACT_NONE, 0.0f);
    be->ops->linear (be, &net->pam_v, s->t, m, v, EHAT_ACT_NONE, 0.0f);
    be->ops->position_attention (be, q, k, v, nimg, hw, cq, C, net->gamma_p,
        s->n);
  }
  if (net->gamma_c != 0.0f)
    be->ops->channel_gram_attention (be, s->t, nimg, hw, C, net->gamma_c,
        s->n);
  tmp = s->t;
  s->t = s->n;
  s->n = tmp;
}

/* Everything between input (s->t) and output (s->out): what a backend may
 * record once per shape and replay (graph_begin). */
static void
body (EhatNetwork *net, EhatSlots *s, int nimg, int H, int W)
{
  EhatBackend *be = net->be;
  const EhatConfig *c = &net->cfg;
  EhatBranch br = { net->w0, net->w1, 0, 0 };
  int hh = H, ww = W;

  be->ops->conv (be, &net->conv_first, s->t, nimg, H, W, s->x0,
      EHAT_ACT_NONE, NULL, 0.0f, 1);
  features (net, s, nimg, H, W, &br);
  if (net->danet)
    danet (net, s, nimg, H, W);

  /* b = conv_after_body(f) + w1·x0, in place over x0 */
  be->ops->conv (be, &net->conv_after_body, s->t, nimg, H, W, s->x0,
      EHAT_ACT_NONE, s->x0, next_w1 (&br), 1);
  be->ops->conv (be, &net->conv_before_upsample, s->x0, nimg, H, W, s->u[0],
      EHAT_ACT_LRELU, NULL, 0.0f, 1);
  for (int u = 0; u < net->n_upsample; u++) {
    be->ops->conv (be, &net->upsample[u], s->u[u], nimg, hh, ww,
        s->u[u + 1], EHAT_ACT_NONE, NULL, 0.0f, net->up_factor);
    hh *= net->up_factor;
    ww *= net->up_factor;
  }
  be->ops->conv (be, &net->conv_last, s->u[net->n_upsample], nimg, hh, ww,
      s->out, EHAT_ACT_NONE, NULL, 0.0f, 1);
  g_assert (!br.w0 || br.i0 == ehat_config_n_w0 (c));
  g_assert (!br.w1 || br.i1 == ehat_config_n_w1 (c));
}

/* What a forward pass reads and writes: host planar float RGB, or (one
 * image) video frames converted by the backend. */
typedef struct
{
  const float *in;
  float *out;
  const EhatFrame *fin;
  const EhatFrameDesc *din;
  EhatFrame *fout;
  const EhatFrameDesc *dout;
} ForwardIO;

static gboolean
forward (EhatNetwork *net, const ForwardIO *io, int nimg, int width,
    int height, GError **error)
{
  EhatBackend *be = net->be;
  const EhatConfig *c = &net->cfg;
  int H, W;
  gsize m, need;
  int scale = c->upscale;
  EhatSlots s;
  EhatGraphMode mode;

  if (!padded_size (c, width, height, &W, &H)) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "model has an absolute position embedding of %d×%d tokens, and a "
        "%d×%d input is larger: run it in tiles of at most %d×%d",
        c->ape_size, c->ape_size, width, height, c->ape_size, c->ape_size);
    return FALSE;
  }
  m = (gsize) nimg * H * W;
  need = arena_floats (net, plan_arena (net, m, NULL, NULL));

  if (need > net->arena_floats) {
    if (net->arena)
      be->ops->free (be, net->arena);
    net->arena_floats = 0;
    net->arena = be->ops->alloc (be, need, error);
    if (!net->arena)
      return FALSE;
    net->arena_floats = need;
  }
  plan_arena (net, m, &s, net->arena);

  if (io->fin)
    be->ops->frame_input (be, io->fin, io->din, W, H, c->rgb_mean,
        c->img_range, s.t);
  else
    be->ops->input (be, io->in, nimg, width, height, W, H, c->rgb_mean,
        c->img_range, s.t);
  mode = be->ops->graph_begin ? be->ops->graph_begin (be, nimg, H, W,
      net->arena) : EHAT_GRAPH_RUN;
  if (mode != EHAT_GRAPH_REPLAYED) {
    body (net, &s, nimg, H, W);
    /* a recording that failed enqueued nothing: run the body now */
    if (mode == EHAT_GRAPH_RECORD && !be->ops->graph_end (be))
      body (net, &s, nimg, H, W);
  }
  if (io->fout)
    be->ops->frame_output (be, s.out, W * scale, H * scale, c->rgb_mean,
        c->img_range, io->dout, io->fout,
        io->din->a >= 0 && io->dout->a >= 0 ? io->din : NULL);
  else
    be->ops->output (be, s.out, nimg, W * scale, H * scale, width * scale,
        height * scale, c->rgb_mean, c->img_range, io->out);
  return be->ops->sync (be, error);
}

gboolean
ehat_network_forward (EhatNetwork *net, const float *in, int nimg, int width,
    int height, float *out, GError **error)
{
  ForwardIO io = { in, out, NULL, NULL, NULL, NULL };

  return forward (net, &io, nimg, width, height, error);
}

gboolean
ehat_network_forward_frame (EhatNetwork *net, const EhatFrame *in,
    const EhatFrameDesc *din, EhatFrame *out, const EhatFrameDesc *dout,
    GError **error)
{
  ForwardIO io = { NULL, NULL, in, din, out, dout };

  if (!net->be->ops->frame_input || !net->be->ops->frame_output) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_UNSUPPORTED,
        "the %s backend converts no frames", net->be->ops->describe (net->be));
    return FALSE;
  }
  return forward (net, &io, 1, din->width, din->height, error);
}
