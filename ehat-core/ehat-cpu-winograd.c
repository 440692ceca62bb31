/* 3×3 convolutions of the CPU backend by Winograd's minimal filtering
 * F(4×4, 3×3) (Lavin and Gray, CVPR 2016): each 4×4 block of outputs
 * comes from its 6×6 block of inputs with 36 products per channel pair
 * instead of 144.  For a strip of T tiles of one tile row:
 *
 *   V[t][ξ][ci] = (Bᵀ d_t B)[ξ]               the input transform
 *   M[t][ξ][co] = Σci V[t][ξ][ci] · U[ξ][ci][co]  36 GEMMs (ehat_gemm)
 *   y_t         = Aᵀ M_t A, + bias, activation, residual, pixel shuffle
 *
 * with U = G g Gᵀ computed in double at load.  The maps are rows of
 * channels, so every transform works on vectors of VL channels.
 *
 * Interpolation points 0, 1, −1, 2, −1/2 and ∞ instead of the usual
 * 0, ±1, ±2, ∞: in a float32 NumPy model of these transforms on random
 * 3×3 layers of 16–180 channels the largest error was 3× smaller
 * (4–8·10⁻⁶ on outputs of magnitude 4; the usual points 1–2·10⁻⁵; im2col
 * 0.5–1.4·10⁻⁶).  The rows of Bᵀ are scaled to small integers and halves,
 * the scale moved into G. */
#include "ehat-cpu.h"

/* Vectors of VL channels: 16 on x86-64 (a zmm in the AVX-512 clone, two
 * ymm in the AVX2 one), else ehat-cpu.h's register width (GCC keeps
 * vectors wider than the registers in memory: on aarch64 the transforms
 * did). */
#ifdef EHAT_HAVE_CLONES
#define VL 16
#else
#define VL EHAT_VL
#endif
typedef float vf __attribute__ ((vector_size (4 * VL), aligned (4)));

/* Bᵀ: the input transform of six values along one axis, o0..o5 from
 * d0..d5 (named vectors: no arrays, see WORK_VECTORS). */
#define BT6(o, d) do {                                                      \
    o##0 = d##0 + 1.5f * d##1 - 2.0f * d##2 - 1.5f * d##3 + d##4;           \
    o##1 = 2.0f * d##1 + 5.0f * d##2 + d##3 - 2.0f * d##4;                  \
    o##2 = 2.0f * d##1 + d##2 - 5.0f * d##3 + 2.0f * d##4;                  \
    o##3 = -d##1 - 2.0f * d##2 + d##3 + 2.0f * d##4;                        \
    o##4 = -2.0f * d##1 + d##2 + 2.0f * d##3 - d##4;                        \
    o##5 = d##1 + 1.5f * d##2 - 2.0f * d##3 - 1.5f * d##4 + d##5;           \
  } while (0)

/* Aᵀ: six products to four outputs, o0..o3 from m0..m5. */
#define AT4(o, m) do {                                                      \
    o##0 = m##0 + m##1 + m##2 + m##3 + m##4;                                \
    o##1 = m##1 - m##2 + 2.0f * m##3 - 0.5f * m##4;                         \
    o##2 = m##1 + m##2 + 4.0f * m##3 + 0.25f * m##4;                        \
    o##3 = m##1 - m##2 + 8.0f * m##3 - 0.125f * m##4 + m##5;                \
  } while (0)

/* G, matching the scaled Bᵀ (exact fractions, applied in double). */
static const double g_rows[6][3] = {
  {1.0, 0.0, 0.0},
  {1.0 / 6, 1.0 / 6, 1.0 / 6},
  {1.0 / 6, -1.0 / 6, 1.0 / 6},
  {1.0 / 30, 1.0 / 15, 2.0 / 15},
  {16.0 / 15, -8.0 / 15, 4.0 / 15},
  {0.0, 0.0, 1.0},
};

/* Tiles per strip: enough rows that each product's weights (cin × cout,
 * read from L3 once per strip) serve many, few enough that the strip's
 * V and M stay near L2.  Without AVX-512 the strips are 4× longer:
 * OpenBLAS packs the weights again on every call (fast-x4 ran 1.09×
 * faster on AVX2, fast-x2 the same; 8× gained nothing more), and the AVX2
 * kernels' 6-row tiles waste less of a longer strip. */
#define STRIP_FLOATS (128 << 10)
#define STRIP_FLOATS_LONG (512 << 10)
#define STRIP_MIN 8
#define STRIP_MAX 64

static gsize
product_bytes (EhatGemmKind gemm, int cin, int cout)
{
  EhatGemmB s;
  ehat_gemm_layout (&s, gemm, cin, cout);
  return (ehat_gemm_data_bytes (&s) + 63) / 64 * 64;
}

gboolean
ehat_winograd_suits (int k, int cin, int cout)
{
  /* From 16 input channels up (measured: 16 → 48 gains 2.1×); the first
   * convolution's 3 inputs would leave little for the products to save
   * beside the transforms.  Narrow outputs take the direct kernel. */
  return k == 3 && cin >= 16 && cout > EHAT_NARROW_MAX
      && g_strcmp0 (g_getenv ("EHAT_CPU_CONV"), "im2col") != 0;
}

gsize
ehat_winograd_data_bytes (EhatGemmKind gemm, int cin, int cout)
{
  return 36 * product_bytes (gemm, cin, cout);
}

gboolean
ehat_winograd_pack (EhatWinogradB *wb, EhatGemmKind gemm, void *data,
    const float *w, int cin, int cout, GError **error)
{
  gsize plane = (gsize) cin * cout;
  g_autofree float *u = g_try_new (float, 36 * plane);

  if (!u) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY,
        "out of host memory transforming a convolution");
    return FALSE;
  }
  ehat_gemm_layout (&wb->b, EHAT_GEMM_WINOGRAD, cin, cout);
  wb->b.data = data;
  wb->gemm = gemm;
  wb->stride = product_bytes (gemm, cin, cout);
  /* U = G g Gᵀ per channel pair, into 36 planes [ci][co] */
  for (int co = 0; co < cout; co++)
    for (int ci = 0; ci < cin; ci++) {
      const float *g = w + ((gsize) co * cin + ci) * 9;
      double gg[6][3];
      for (int a = 0; a < 6; a++)
        for (int kx = 0; kx < 3; kx++)
          gg[a][kx] = g_rows[a][0] * g[kx] + g_rows[a][1] * g[3 + kx]
              + g_rows[a][2] * g[6 + kx];
      for (int a = 0; a < 6; a++)
        for (int b = 0; b < 6; b++)
          u[(a * 6 + b) * plane + (gsize) ci * cout + co] = (float)
              (gg[a][0] * g_rows[b][0] + gg[a][1] * g_rows[b][1]
              + gg[a][2] * g_rows[b][2]);
    }
  for (int k = 0; k < 36; k++) {
    EhatGemmB s;
    ehat_gemm_layout (&s, gemm, cin, cout);
    ehat_gemm_pack (&s, (char *) data + k * wb->stride, u + k * plane, cout,
        1);
  }
  return TRUE;
}

int
ehat_winograd_strip (const EhatWinogradB *wb)
{
  int budget = wb->gemm == EHAT_GEMM_F32 ? STRIP_FLOATS : STRIP_FLOATS_LONG;
  int t = budget / (36 * (wb->b.k + wb->b.n));
  return CLAMP (t / 8 * 8, STRIP_MIN, STRIP_MAX);
}

/* A tile's transforms keep their vectors in named variables and the
 * thread's scratch, never in local arrays: the compiler aligns those to
 * 64 bytes and moves them with aligned instructions, which ASan's fake
 * stack frames (detect_stack_use_after_return) do not honour.  The
 * scratch holds the 36 vectors between the two passes of a transform and
 * a pad for partial vectors. */
#define WORK_VECTORS 37

gsize
ehat_winograd_scratch_floats (const EhatWinogradB *wb)
{
  /* V and M, a tile's outputs before a pixel shuffle, the transforms' */
  return (gsize) 36 * ehat_winograd_strip (wb) * (wb->b.k + wb->b.n)
      + 16 * wb->b.n + WORK_VECTORS * VL;
}

/* The nc ≤ VL floats at p, the lanes past them zero (through pad). */
static inline vf
load_vec (const float *p, int nc, float *restrict pad)
{
  if (nc == VL)
    return *(const vf *) p;
  memcpy (pad, p, nc * sizeof (float));
  memset (pad + nc, 0, (VL - nc) * sizeof (float));
  return *(const vf *) pad;
}

static inline void
store_vec (float *p, vf v, int nc, float *restrict pad)
{
  if (nc == VL) {
    *(vf *) p = v;
  } else {
    *(vf *) pad = v;
    memcpy (p, pad, nc * sizeof (float));
  }
}

/* Input pixel (sy, sx), channels c0.., zero outside the image. */
static inline vf
pixel (const float *x, int h, int w, int cin, int sy, int sx, int c0, int nc,
    float *restrict pad)
{
  if (sy < 0 || sy >= h || sx < 0 || sx >= w)
    return (vf) { 0 };
  return load_vec (x + ((gsize) sy * w + sx) * cin + c0, nc, pad);
}

/* The input transform of tile (y0, x0) (its top-left input pixel, −1
 * based) into v: 36 rows of cin, one per product.  t: 36 vectors, pad:
 * VL floats of scratch. */
EHAT_CLONES static void
input_tile (const float *restrict x, int h, int w, int cin, int y0, int x0,
    float *restrict v, vf *restrict t, float *restrict pad)
{
  for (int c0 = 0; c0 < cin; c0 += VL) {
    int nc = MIN (VL, cin - c0);

    for (int i = 0; i < 6; i++) {
      int sy = y0 + i;
      vf d0, d1, d2, d3, d4, d5, e0, e1, e2, e3, e4, e5;
      d0 = pixel (x, h, w, cin, sy, x0, c0, nc, pad);
      d1 = pixel (x, h, w, cin, sy, x0 + 1, c0, nc, pad);
      d2 = pixel (x, h, w, cin, sy, x0 + 2, c0, nc, pad);
      d3 = pixel (x, h, w, cin, sy, x0 + 3, c0, nc, pad);
      d4 = pixel (x, h, w, cin, sy, x0 + 4, c0, nc, pad);
      d5 = pixel (x, h, w, cin, sy, x0 + 5, c0, nc, pad);
      BT6 (e, d);
      t[i * 6] = e0;
      t[i * 6 + 1] = e1;
      t[i * 6 + 2] = e2;
      t[i * 6 + 3] = e3;
      t[i * 6 + 4] = e4;
      t[i * 6 + 5] = e5;
    }
    for (int j = 0; j < 6; j++) {
      vf d0 = t[j], d1 = t[6 + j], d2 = t[12 + j], d3 = t[18 + j];
      vf d4 = t[24 + j], d5 = t[30 + j], e0, e1, e2, e3, e4, e5;
      float *vj = v + j * cin + c0;
      BT6 (e, d);
      store_vec (vj, e0, nc, pad);
      store_vec (vj + 6 * cin, e1, nc, pad);
      store_vec (vj + 12 * cin, e2, nc, pad);
      store_vec (vj + 18 * cin, e3, nc, pad);
      store_vec (vj + 24 * cin, e4, nc, pad);
      store_vec (vj + 30 * cin, e5, nc, pad);
    }
  }
}

typedef struct
{
  int h, w, cout, shuffle;
  const float *bias, *res;
  EhatAct act;
  float alpha;
} OutArgs;

/* The tile's rows×cols pixels from blk into y, pixel-shuffled. */
EHAT_CLONES static void
shuffle_tile (const float *blk, const OutArgs *o, int oy0, int ox0, int rows,
    int cols, float *y)
{
  for (int i = 0; i < rows; i++)
    for (int j = 0; j < cols; j++)
      ehat_shuffle_pixel (blk + (i * 4 + j) * o->cout, o->cout, o->shuffle,
          y, (gsize) o->w * o->shuffle, oy0 + i, ox0 + j);
}

/* K = VL/4 channels of each of the four pixels per vector (below) */
#define K (VL / 4)

/* Lanes 4k + q → lane K·q + k: the permute of store_shuffled2, in each
 * compiler's spelling (clang builds the fuzzers). */
#if VL == 16
#define BY_Q_LANES 0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15
#elif VL == 8
#define BY_Q_LANES 0, 4, 1, 5, 2, 6, 3, 7
#else
#define BY_Q_LANES 0, 1, 2, 3
#endif
#if defined(__clang__)
#define BY_Q(v) __builtin_shufflevector (v, v, BY_Q_LANES)
#else
typedef gint32 vi __attribute__ ((vector_size (4 * VL)));
#define BY_Q(v) __builtin_shuffle (v, (vi) { BY_Q_LANES })
#endif

/* A vector of channels c0.. of output (py, px) shuffled by 2: lane 4k + q
 * is channel c0/4 + k of pixel (2py + q/2, 2px + q%2), so the lanes of
 * each q, gathered by one permute, are nc/4 consecutive channels there
 * (the ×2 and ×4 models' upsampling; other factors go through blk). */
static inline void
store_shuffled2 (float *y, int w, int co, int py, int px, int c0, vf v,
    int nc, float *restrict pad)
{
  gsize ow = (gsize) w * 2;
  float *y0 = y + ((gsize) py * 2 * ow + (gsize) px * 2) * co + c0 / 4;
  float *y1 = y0 + ow * co;

  *(vf *) pad = BY_Q (v);
  if (nc == VL) {
    /* constant sizes: four moves of K floats */
    memcpy (y0, pad, K * sizeof (float));
    memcpy (y0 + co, pad + K, K * sizeof (float));
    memcpy (y1, pad + 2 * K, K * sizeof (float));
    memcpy (y1 + co, pad + 3 * K, K * sizeof (float));
  } else {
    memcpy (y0, pad, nc / 4 * sizeof (float));
    memcpy (y0 + co, pad + K, nc / 4 * sizeof (float));
    memcpy (y1, pad + 2 * K, nc / 4 * sizeof (float));
    memcpy (y1 + co, pad + 3 * K, nc / 4 * sizeof (float));
  }
}

/* Output (oy0 + i, ox0 + j) of a tile, channels c0..: bias, activation,
 * residual, then into y (shuffled on the way by 2), or for other shuffles
 * into blk (16 rows of cout) first. */
static inline void
finish (const OutArgs *o, vf v, vf bias, int oy0, int ox0, int i, int j,
    int c0, int nc, float *y, float *blk, float *restrict pad)
{
  int cout = o->cout;
  gsize p = (gsize) (oy0 + i) * o->w + ox0 + j;

  v += bias;
  if (o->act != EHAT_ACT_NONE) {
    *(vf *) pad = v;
    ehat_activate (pad, VL, o->act);
    v = *(const vf *) pad;
  }
  if (o->res)
    v += o->alpha * load_vec (o->res + p * cout + c0, nc, pad);
  if (o->shuffle == 1)
    store_vec (y + p * cout + c0, v, nc, pad);
  else if (o->shuffle == 2)
    store_shuffled2 (y, o->w, cout / 4, oy0 + i, ox0 + j, c0, v, nc, pad);
  else
    store_vec (blk + (i * 4 + j) * cout + c0, v, nc, pad);
}

/* The output transform of a tile's products m (36 rows of cout) and its
 * outputs inside the image.  r: 24 vectors, pad: VL floats of scratch. */
EHAT_CLONES static void
output_tile (const float *restrict m, const OutArgs *o, int oy0, int ox0,
    float *y, float *blk, vf *restrict r, float *restrict pad)
{
  int cout = o->cout;
  int rows = MIN (4, o->h - oy0), cols = MIN (4, o->w - ox0);

  for (int c0 = 0; c0 < cout; c0 += VL) {
    int nc = MIN (VL, cout - c0);
    vf bias = o->bias ? load_vec (o->bias + c0, nc, pad) : (vf) { 0 };

    for (int i = 0; i < 6; i++) {
      const float *mi = m + i * 6 * cout + c0;
      vf m0, m1, m2, m3, m4, m5, s0, s1, s2, s3;
      m0 = load_vec (mi, nc, pad);
      m1 = load_vec (mi + cout, nc, pad);
      m2 = load_vec (mi + 2 * cout, nc, pad);
      m3 = load_vec (mi + 3 * cout, nc, pad);
      m4 = load_vec (mi + 4 * cout, nc, pad);
      m5 = load_vec (mi + 5 * cout, nc, pad);
      AT4 (s, m);
      r[i * 4] = s0;
      r[i * 4 + 1] = s1;
      r[i * 4 + 2] = s2;
      r[i * 4 + 3] = s3;
    }
    for (int j = 0; j < cols; j++) {
      vf m0 = r[j], m1 = r[4 + j], m2 = r[8 + j], m3 = r[12 + j];
      vf m4 = r[16 + j], m5 = r[20 + j], s0, s1, s2, s3;
      AT4 (s, m);
      finish (o, s0, bias, oy0, ox0, 0, j, c0, nc, y, blk, pad);
      if (rows > 1)
        finish (o, s1, bias, oy0, ox0, 1, j, c0, nc, y, blk, pad);
      if (rows > 2)
        finish (o, s2, bias, oy0, ox0, 2, j, c0, nc, y, blk, pad);
      if (rows > 3)
        finish (o, s3, bias, oy0, ox0, 3, j, c0, nc, y, blk, pad);
    }
  }
  if (o->shuffle > 2)
    shuffle_tile (blk, o, oy0, ox0, rows, cols, y);
}

void
ehat_winograd_conv (const EhatWinogradB *wb, const float *x, int h, int w,
    int ty, int tx0, int tx1, float *y, int shuffle, const EhatGemmEpi *e,
    float *scratch)
{
  int cin = wb->b.k, cout = wb->b.n, nt = tx1 - tx0;
  int strip = ehat_winograd_strip (wb);
  /* tile-major: each tile's 36 rows together for its transforms, the
   * GEMMs reading and writing every 36th row */
  float *v = scratch, *m = scratch + (gsize) 36 * strip * cin;
  float *blk = m + (gsize) 36 * strip * cout;
  vf *wk = (vf *) (blk + 16 * cout);
  float *pad = (float *) (wk + 36);
  OutArgs o = { h, w, cout, shuffle, e->bias, e->res, e->act, e->alpha };
  EhatGemmEpi none = { 0 };
  EhatGemmB s;

  g_assert (nt > 0 && nt <= strip);
  for (int t = 0; t < nt; t++)
    input_tile (x, h, w, cin, ty * 4 - 1, (tx0 + t) * 4 - 1,
        v + (gsize) t * 36 * cin, wk, pad);
  ehat_gemm_layout (&s, wb->gemm, cin, cout);
  for (int k = 0; k < 36; k++) {
    s.data = (char *) wb->b.data + k * wb->stride;
    ehat_gemm (&s, v + k * cin, 36 * cin, nt, m + k * cout, 36 * cout,
        &none, NULL, NULL);
  }
  for (int t = 0; t < nt; t++)
    output_tile (m + (gsize) t * 36 * cout, &o, ty * 4, (tx0 + t) * 4, y,
        blk, wk, pad);
}
