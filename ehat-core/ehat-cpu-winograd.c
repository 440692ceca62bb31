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
 * channels, so every transform works on vectors of 16 channels.
 *
 * Interpolation points 0, 1, −1, 2, −1/2 and ∞ instead of the usual
 * 0, ±1, ±2, ∞: in a float32 NumPy model of these transforms on random
 * 3×3 layers of 16–180 channels the largest error was 3× smaller
 * (4–8·10⁻⁶ on outputs of magnitude 4; the usual points 1–2·10⁻⁵; im2col
 * 0.5–1.4·10⁻⁶).  The rows of Bᵀ are scaled to small integers and halves,
 * the scale moved into G. */
#include "ehat-cpu.h"

typedef float v16 __attribute__ ((vector_size (64), aligned (4)));

#define VL 16

/* Bᵀ: the input transform of six values along one axis. */
#define BT_ROWS(o, d) do {                                                  \
    o[0] = d[0] + 1.5f * d[1] - 2.0f * d[2] - 1.5f * d[3] + d[4];           \
    o[1] = 2.0f * d[1] + 5.0f * d[2] + d[3] - 2.0f * d[4];                  \
    o[2] = 2.0f * d[1] + d[2] - 5.0f * d[3] + 2.0f * d[4];                  \
    o[3] = -d[1] - 2.0f * d[2] + d[3] + 2.0f * d[4];                        \
    o[4] = -2.0f * d[1] + d[2] + 2.0f * d[3] - d[4];                        \
    o[5] = d[1] + 1.5f * d[2] - 2.0f * d[3] - 1.5f * d[4] + d[5];           \
  } while (0)

/* Aᵀ: six products to four outputs. */
#define AT_ROWS(o, m) do {                                                  \
    o[0] = m[0] + m[1] + m[2] + m[3] + m[4];                                \
    o[1] = m[1] - m[2] + 2.0f * m[3] - 0.5f * m[4];                         \
    o[2] = m[1] + m[2] + 4.0f * m[3] + 0.25f * m[4];                        \
    o[3] = m[1] - m[2] + 8.0f * m[3] - 0.125f * m[4] + m[5];                \
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
 * V and M stay near L2. */
#define STRIP_FLOATS (128 << 10)
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
  int t = STRIP_FLOATS / (36 * (wb->b.k + wb->b.n));
  return CLAMP (t / 8 * 8, STRIP_MIN, STRIP_MAX);
}

gsize
ehat_winograd_scratch_floats (const EhatWinogradB *wb)
{
  /* V and M, then a tile's outputs before a pixel shuffle */
  return (gsize) 36 * ehat_winograd_strip (wb) * (wb->b.k + wb->b.n)
      + 16 * wb->b.n;
}

static inline v16
load_lanes (const float *p, int nc)
{
  v16 v = { 0 };
  if (nc == VL)
    return *(const v16 *) p;
  memcpy (&v, p, nc * sizeof (float));
  return v;
}

static inline void
store_lanes (float *p, v16 v, int nc)
{
  if (nc == VL)
    *(v16 *) p = v;
  else
    memcpy (p, &v, nc * sizeof (float));
}

/* The input transform of tile (y0, x0) (its top-left input pixel, −1
 * based) into v: 36 rows of cin, one per product. */
EHAT_CLONES static void
input_tile (const float *x, int h, int w, int cin, int y0, int x0, float *v)
{
  for (int c0 = 0; c0 < cin; c0 += VL) {
    int nc = MIN (VL, cin - c0);
    v16 d[6][6], t[6][6], col[6], out[6];

    for (int i = 0; i < 6; i++) {
      int sy = y0 + i;
      for (int j = 0; j < 6; j++) {
        int sx = x0 + j;
        if (sy < 0 || sy >= h || sx < 0 || sx >= w)
          d[i][j] = (v16) { 0 };
        else
          d[i][j] = load_lanes (x + ((gsize) sy * w + sx) * cin + c0, nc);
      }
    }
    for (int i = 0; i < 6; i++)
      BT_ROWS (t[i], d[i]);
    for (int j = 0; j < 6; j++) {
      for (int i = 0; i < 6; i++)
        col[i] = t[i][j];
      BT_ROWS (out, col);
      for (int i = 0; i < 6; i++)
        store_lanes (v + (i * 6 + j) * cin + c0, out[i], nc);
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

static inline void
activate16 (v16 *v, EhatAct act)
{
  switch (act) {
    case EHAT_ACT_GELU:
      for (int l = 0; l < VL; l++)
        (*v)[l] = ehat_gelu ((*v)[l]);
      break;
    case EHAT_ACT_RELU:
      for (int l = 0; l < VL; l++)
        (*v)[l] = (*v)[l] > 0.0f ? (*v)[l] : 0.0f;
      break;
    case EHAT_ACT_LRELU:
      for (int l = 0; l < VL; l++)
        (*v)[l] = (*v)[l] > 0.0f ? (*v)[l] : 0.01f * (*v)[l];
      break;
    default:
      break;
  }
}

/* Channel c·s² + a·s + b of output (py, px) is channel c of pixel
 * (py·s + a, px·s + b): the tile's rows×cols pixels from blk into y. */
EHAT_CLONES static void
shuffle_tile (const float *blk, const OutArgs *o, int oy0, int ox0, int rows,
    int cols, float *y)
{
  int s = o->shuffle, ss = s * s, co = o->cout / ss;
  gsize ow = (gsize) o->w * s;

  for (int i = 0; i < rows; i++)
    for (int j = 0; j < cols; j++) {
      const float *src = blk + (i * 4 + j) * o->cout;
      for (int a = 0; a < s; a++)
        for (int b = 0; b < s; b++) {
          float *dst = y + (((gsize) (oy0 + i) * s + a) * ow
              + (gsize) (ox0 + j) * s + b) * co;
          const float *sq = src + a * s + b;
          for (int c = 0; c < co; c++)
            dst[c] = sq[c * ss];
        }
    }
}

/* The output transform of a tile's products m (36 rows of cout), and its
 * epilogue: outputs (oy0 + i, ox0 + j) inside the image, into y, or with a
 * pixel shuffle into blk (16 rows of cout) first. */
EHAT_CLONES static void
output_tile (const float *m, const OutArgs *o, int oy0, int ox0, float *y,
    float *blk)
{
  int cout = o->cout, s = o->shuffle;
  int rows = MIN (4, o->h - oy0), cols = MIN (4, o->w - ox0);

  for (int c0 = 0; c0 < cout; c0 += VL) {
    int nc = MIN (VL, cout - c0);
    v16 r[6][4], row[6], col[6], out[4], bias = { 0 };

    if (o->bias)
      bias = load_lanes (o->bias + c0, nc);
    for (int i = 0; i < 6; i++) {
      for (int j = 0; j < 6; j++)
        row[j] = load_lanes (m + (i * 6 + j) * cout + c0, nc);
      AT_ROWS (r[i], row);
    }
    for (int j = 0; j < cols; j++) {
      for (int i = 0; i < 6; i++)
        col[i] = r[i][j];
      AT_ROWS (out, col);
      for (int i = 0; i < rows; i++) {
        gsize p = (gsize) (oy0 + i) * o->w + ox0 + j;
        v16 v = out[i] + bias;
        activate16 (&v, o->act);
        if (o->res)
          v += o->alpha * load_lanes (o->res + p * cout + c0, nc);
        if (s == 1)
          store_lanes (y + p * cout + c0, v, nc);
        else
          store_lanes (blk + (i * 4 + j) * cout + c0, v, nc);
      }
    }
  }
  if (s > 1)
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
  OutArgs o = { h, w, cout, shuffle, e->bias, e->res, e->act, e->alpha };
  EhatGemmEpi none = { 0 };
  EhatGemmB s;

  g_assert (nt > 0 && nt <= strip);
  for (int t = 0; t < nt; t++)
    input_tile (x, h, w, cin, ty * 4 - 1, (tx0 + t) * 4 - 1,
        v + (gsize) t * 36 * cin);
  ehat_gemm_layout (&s, wb->gemm, cin, cout);
  for (int k = 0; k < 36; k++) {
    s.data = (char *) wb->b.data + k * wb->stride;
    ehat_gemm (&s, v + k * cin, 36 * cin, nt, m + k * cout, 36 * cout,
        &none, NULL, NULL);
  }
  for (int t = 0; t < nt; t++)
    output_tile (m + (gsize) t * 36 * cout, &o, ty * 4, (tx0 + t) * 4, y,
        blk);
}
