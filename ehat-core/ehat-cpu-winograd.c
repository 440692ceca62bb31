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
#define WORK_FLOATS (37 * 16)

gsize
ehat_winograd_scratch_floats (const EhatWinogradB *wb)
{
  /* V and M, a tile's outputs before a pixel shuffle, the transforms' */
  return (gsize) 36 * ehat_winograd_strip (wb) * (wb->b.k + wb->b.n)
      + 16 * wb->b.n + WORK_FLOATS;
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

/* The transforms on vectors of 16 channels (a zmm in the AVX-512 clone),
 * or of ehat-cpu.h's register width where the code is compiled once
 * (GCC keeps vectors wider than the registers in memory: on aarch64 the
 * transforms did) */
#ifdef EHAT_HAVE_CLONES
#define VL 16
#else
#define VL EHAT_VL
#endif
#define TILE(name) name##_wide
#define TILE_FN EHAT_CLONES static
/* always inlined: an out-of-line copy would be compiled for the baseline
 * and take its vectors in memory, where the AVX-512 clone passes them in
 * registers (it happened: finish, with GELU inlined, was not inlined) */
#define TILE_INLINE static inline __attribute__ ((always_inline))
#include "ehat-cpu-winograd-tile.h"
#undef TILE
#undef TILE_FN
#undef TILE_INLINE
#undef VL

#ifdef EHAT_X86_KERNELS
/* ... and on 8, a ymm, for AVX2 machines (those of the AVX2 GEMMs): in
 * the AVX2 clone, 16-lane vectors went through the stack */
#define VL 8
#define TILE(name) name##_avx2
#define TILE_FN EHAT_T_AVX2 static
#define TILE_INLINE EHAT_T_AVX2 EHAT_INLINE
#include "ehat-cpu-winograd-tile.h"
#undef TILE
#undef TILE_FN
#undef TILE_INLINE
#undef VL
#endif

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
  float *work = blk + 16 * cout;
  OutArgs o = { h, w, cout, shuffle, e->bias, e->res, e->act, e->alpha };
  EhatGemmEpi none = { 0 };
  EhatGemmB s;

  __typeof__ (input_tile_wide) *input_tile = input_tile_wide;
  __typeof__ (output_tile_wide) *output_tile = output_tile_wide;

#ifdef EHAT_X86_KERNELS
  if (wb->gemm == EHAT_GEMM_F32_AVX2) {
    input_tile = input_tile_avx2;
    output_tile = output_tile_avx2;
  }
#endif
  g_assert (nt > 0 && nt <= strip);
  for (int t = 0; t < nt; t++)
    input_tile (x, h, w, cin, ty * 4 - 1, (tx0 + t) * 4 - 1,
        v + (gsize) t * 36 * cin, work);
  ehat_gemm_layout (&s, wb->gemm, cin, cout);
  for (int k = 0; k < 36; k++) {
    s.data = (char *) wb->b.data + k * wb->stride;
    ehat_gemm (&s, v + k * cin, 36 * cin, nt, m + k * cout, 36 * cout,
        &none, NULL, NULL);
  }
  for (int t = 0; t < nt; t++)
    output_tile (m + (gsize) t * 36 * cout, &o, ty * 4, (tx0 + t) * 4, y,
        blk, work);
}
