/* The CPU backend: float32 (the numerical reference of the project and the
 * fallback when no GPU exists) or bf16 GEMMs with fp32 accumulation
 * (precision=bf16 on CPUs with AVX512-BF16).  GEMMs run on the own
 * micro-kernels of ehat-cpu-gemm.c with weights packed once, at load
 * (upload_conv, prepare_linear), through OpenBLAS on CPUs without AVX-512;
 * 3×3 convolutions wide enough to gain run as Winograd F(4×4, 3×3) in fp32
 * whatever the precision (ehat-cpu-winograd.c); the pool of ehat-pool.c
 * runs everything in parallel. */
#include "ehat-cpu.h"
#include "ehat-fault.h"

#include <cblas.h>
#include <stdlib.h>

#define CPU(be) ((EhatCpuBackend *) (be))

/* im2col bands of about this many floats keep the buffer in cache-friendly
 * sizes while the GEMM still sees hundreds of rows. */
#define BAND_FLOATS (1 << 20)

static void
cpu_destroy (EhatBackend *be)
{
  EhatCpuBackend *cpu = CPU (be);

  ehat_pool_free (cpu->pool);
  for (int t = 0; t < cpu->n_threads; t++) {
    g_free (cpu->conv_col[t]);
    g_free (cpu->conv_tmp[t]);
  }
  g_free (cpu->conv_col);
  g_free (cpu->conv_tmp);
  g_free (cpu->conv_col_len);
  g_free (cpu->conv_tmp_len);
  for (int t = 0; t < cpu->n_threads; t++) {
    g_free (cpu->abuf[t]);
    g_free (cpu->block[t]);
  }
  g_free (cpu->block);
  g_free (cpu->block_len);
  g_free (cpu->abuf);
  g_free (cpu->abuf_len);
  g_free (cpu->xbf);
  g_free (CPU (be)->dense_bias);
  g_free (CPU (be)->description);
  g_free (be);
}

static const char *
cpu_describe (EhatBackend *be)
{
  return CPU (be)->description;
}

static float *
cpu_alloc (EhatBackend *be, gsize n, GError **error)
{
  float *p;

  if (n > G_MAXSIZE / sizeof (float) - 64) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY,
        "allocation of %" G_GSIZE_FORMAT " floats overflows", n);
    return NULL;
  }
  if (ehat_fault_alloc_fails (n * sizeof (float), error))
    return NULL;
  /* 64-byte alignment for the vector loops; a failed allocation is an
   * error the caller reports (tiles shrink), not an abort. */
  if (posix_memalign ((void **) &p, 64, MAX (n, 1) * sizeof (float)) != 0)
    p = NULL;
  if (!p)
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY,
        "out of host memory allocating %" G_GSIZE_FORMAT " MiB",
        n * sizeof (float) >> 20);
  return p;
}

static void
cpu_free (EhatBackend *be, void *p)
{
  free (p);
}

/* Packed weights (convolutions, prepared linear layers) are one allocation:
 * an EhatGemmB header, then the panels at this offset (64-byte aligned). */
#define PACK_HEADER 64
G_STATIC_ASSERT (sizeof (EhatWinogradB) <= PACK_HEADER);

/* The allocation for data_bytes of packed weights: they start at
 * PACK_HEADER; pack_done () (or the Winograd path) writes the header once
 * they are filled. */
static char *
pack_alloc (EhatBackend *be, gsize data_bytes, GError **error)
{
  return (char *) cpu_alloc (be, (PACK_HEADER + data_bytes + sizeof (float)
          - 1) / sizeof (float), error);
}

static float *
pack_done (char *p, const EhatGemmB *b)
{
  memcpy (p, b, sizeof *b);
  return (float *) p;
}

static float *
cpu_upload (EhatBackend *be, const float *host, gsize n, GError **error)
{
  float *p = cpu_alloc (be, n, error);
  if (p)
    memcpy (p, host, n * sizeof (float));
  return p;
}

static float *
cpu_borrow (EhatBackend *be, const float *host, gsize n, GError **error)
{
  return (float *) host;
}

static void
cpu_unborrow (EhatBackend *be, float *p)
{
  /* the model owns borrowed weights */
}

/* Which GEMM a k×n weight gets.  bf16 only where it pays and costs no
 * accuracy worth having: not for the first convolution (k = 27) nor for
 * outputs narrower than a vector (the last convolution: 3 channels). */
static EhatGemmKind
gemm_kind (EhatCpuBackend *cpu, gsize k, int n)
{
  if (cpu->bf16 && k >= 32 && n >= 16)
    return EHAT_GEMM_BF16;
  return cpu->f32_kind;
}

/* A linear weight packed for the GEMM kernels once, at load: one
 * allocation holding the EhatGemmB and its panels, B(i, j) = W[j][i].
 * Without the own kernels (no AVX-512) OpenBLAS reads W as it is. */
static gboolean
cpu_prepare_linear (EhatBackend *be, EhatLinearW *lw, GError **error)
{
  EhatGemmKind kind = gemm_kind (CPU (be), lw->in, lw->out);
  EhatGemmB b;
  char *p;

  lw->prepared = NULL;
  if (kind == EHAT_GEMM_BLAS)
    return TRUE;
  ehat_gemm_layout (&b, kind, lw->in, lw->out);
  if (!(p = pack_alloc (be, ehat_gemm_data_bytes (&b), error)))
    return FALSE;
  ehat_gemm_pack (&b, p + PACK_HEADER, lw->w, 1, lw->in);
  lw->prepared = pack_done (p, &b);
  return TRUE;
}

static void
cpu_release_linear (EhatBackend *be, EhatLinearW *lw)
{
  free (lw->prepared);
  lw->prepared = NULL;
}

static gint32 *
cpu_upload_index (EhatBackend *be, const gint32 *host, gsize n,
    GError **error)
{
  return (gint32 *) cpu_upload (be, (const float *) host, n, error);
}

/* A convolution's weights: one allocation (freed by cpu_free) holding an
 * EhatGemmB header, then B = [(ky·k + kx)·cin + ci][cout] (the im2col
 * order) packed for its kernel. */

static float *
cpu_upload_conv (EhatBackend *be, const float *w, int cout, int cin, int k,
    GError **error)
{
  gsize kk = (gsize) k * k, kc = kk * cin;
  g_autofree float *t = NULL;
  EhatGemmB b;
  char *p;

  if (ehat_winograd_suits (k, cin, cout)) {
    /* fp32 products whatever the precision: a quarter of the
     * multiplications at full precision beats bf16 im2col's half rate */
    EhatGemmKind gemm = CPU (be)->f32_kind;
    EhatWinogradB wb;
    if (!(p = pack_alloc (be, ehat_winograd_data_bytes (gemm, cin, cout),
                error)))
      return NULL;
    if (!ehat_winograd_pack (&wb, gemm, p + PACK_HEADER, w, cin, cout,
            error)) {
      free (p);
      return NULL;
    }
    memcpy (p, &wb, sizeof wb);
    return (float *) p;
  }
  if ((CPU (be)->own_f32 || CPU (be)->f32_kind == EHAT_GEMM_F32_AVX2)
      && cout <= EHAT_NARROW_MAX) {
    /* bf16 as for the wide ones, but the last convolution (3 channels:
     * the image itself) stays fp32 */
    EhatGemmKind kind = !CPU (be)->own_f32 ? EHAT_GEMM_NARROW_F32_AVX2
        : CPU (be)->bf16 && kc >= 32 && cout > 3 ? EHAT_GEMM_NARROW_BF16
        : EHAT_GEMM_NARROW_F32;
    ehat_gemm_layout_narrow (&b, kind, k, cin, cout);
    if (!(p = pack_alloc (be, ehat_gemm_data_bytes (&b), error)))
      return NULL;
    ehat_gemm_pack_narrow (&b, p + PACK_HEADER, w);
    return pack_done (p, &b);
  }
  ehat_gemm_layout (&b, gemm_kind (CPU (be), kc, cout), (int) kc, cout);
  if (!(p = pack_alloc (be, ehat_gemm_data_bytes (&b), error)))
    return NULL;
  t = g_try_new (float, kc * cout);
  if (!t) {
    free (p);
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY,
        "out of host memory packing a convolution");
    return NULL;
  }
  for (int co = 0; co < cout; co++)
    for (int ci = 0; ci < cin; ci++)
      for (gsize tap = 0; tap < kk; tap++)
        t[(tap * cin + ci) * cout + co] = w[((gsize) co * cin + ci) * kk + tap];
  ehat_gemm_pack (&b, p + PACK_HEADER, t, cout, 1);
  return pack_done (p, &b);
}

/* PyTorch 'reflect' padding, extended periodically for pads ≥ the size
 * (EHAT-SPEC.md §1); a 1-pixel side replicates. */
static inline int
reflect (int i, int n)
{
  int p;
  if (n == 1)
    return 0;
  p = 2 * (n - 1);
  i %= p;
  if (i < 0)
    i += p;
  return i < n ? i : p - i;
}

typedef struct
{
  const float *src;
  float *dst;
  int w, h, W, H;
  const float *mean;
  float range;
} InOutJob;

/* One task per padded row (n·H of them). */
static void
input_rows (gpointer data, gsize begin, gsize end, int thread)
{
  const InOutJob *j = data;
  for (gsize r = begin; r < end; r++) {
    gsize i = r / j->H;
    int y = r % j->H, sy = reflect (y, j->h);
    const float *img = j->src + i * 3 * j->h * j->w;
    float *row = j->dst + r * j->W * 3;
    for (int xx = 0; xx < j->W; xx++) {
      int sx = reflect (xx, j->w);
      for (int c = 0; c < 3; c++)
        row[xx * 3 + c] =
            (img[((gsize) c * j->h + sy) * j->w + sx] - j->mean[c]) * j->range;
    }
  }
}

static void
cpu_input (EhatBackend *be, const float *host, int n, int w, int h, int W,
    int H, const float mean[3], float range, float *x)
{
  InOutJob j = { host, x, w, h, W, H, mean, range };
  ehat_pool_parallel_for (CPU (be)->pool, (gsize) n * H, 16, input_rows, &j);
}

/* One task per cropped output row (n·h of them). */
static void
output_rows (gpointer data, gsize begin, gsize end, int thread)
{
  const InOutJob *j = data;
  for (gsize r = begin; r < end; r++) {
    gsize i = r / j->h;
    int y = r % j->h;
    const float *row = j->src + (i * j->H + y) * j->W * 3;
    float *img = j->dst + i * 3 * j->h * j->w;
    for (int c = 0; c < 3; c++)
      for (int xx = 0; xx < j->w; xx++)
        img[((gsize) c * j->h + y) * j->w + xx] = row[xx * 3 + c] / j->range
            + j->mean[c];
  }
}

static void
cpu_output (EhatBackend *be, const float *x, int n, int W, int H, int w,
    int h, const float mean[3], float range, float *host)
{
  InOutJob j = { x, host, w, h, W, H, mean, range };
  ehat_pool_parallel_for (CPU (be)->pool, (gsize) n * h, 16, output_rows, &j);
}

/* y[r] = act(y[r] + b) + alpha·res[r] over rows of c (one thread's part). */
EHAT_CLONES static void
epilogue (float *y, gsize rows, int c, const float *b, EhatAct act,
    const float *res, float alpha)
{
  for (gsize r = 0; r < rows; r++) {
    float *yr = y + r * c;
    const float *rr = res ? res + r * c : NULL;
#pragma omp simd
    for (int j = 0; j < c; j++)
      yr[j] += b[j];
    ehat_activate (yr, c, act);
    if (rr) {
#pragma omp simd
      for (int j = 0; j < c; j++)
        yr[j] += alpha * rr[j];
    }
  }
}

/* Rows [y0, y1) of image x (h×w×cin) → col [(y−y0)·w + x][9·cin]. */
static void
im2col (const float *x, int h, int w, int cin, int k, int y0, int y1,
    float *col)
{
  int r = k / 2;
  gsize kc = (gsize) k * k * cin;

  for (int y = y0; y < y1; y++) {
    for (int xx = 0; xx < w; xx++) {
      float *dst = col + ((gsize) (y - y0) * w + xx) * kc;
      for (int ky = 0; ky < k; ky++) {
        int sy = y + ky - r;
        for (int kx = 0; kx < k; kx++) {
          int sx = xx + kx - r;
          float *d = dst + (ky * k + kx) * cin;
          if (sy < 0 || sy >= h || sx < 0 || sx >= w)
            memset (d, 0, cin * sizeof (float));
          else
            memcpy (d, x + ((gsize) sy * w + sx) * cin, cin * sizeof (float));
        }
      }
    }
  }
}

/* im2col of a bf16 map into rows of kp (≥ k·k·cin, the pad column
 * zero). */
static void
im2col_bf16 (const guint16 *x, int h, int w, int cin, int k, int y0, int y1,
    guint16 *col, int kp)
{
  int r = k / 2;
  gsize kc = (gsize) k * k * cin;

  for (int y = y0; y < y1; y++) {
    for (int xx = 0; xx < w; xx++) {
      guint16 *dst = col + ((gsize) (y - y0) * w + xx) * kp;
      for (int ky = 0; ky < k; ky++) {
        int sy = y + ky - r;
        for (int kx = 0; kx < k; kx++) {
          int sx = xx + kx - r;
          guint16 *d = dst + (ky * k + kx) * cin;
          if (sy < 0 || sy >= h || sx < 0 || sx >= w)
            memset (d, 0, cin * sizeof (guint16));
          else
            memcpy (d, x + ((gsize) sy * w + sx) * cin,
                cin * sizeof (guint16));
        }
      }
      if ((gsize) kp > kc)
        memset (dst + kc, 0, (kp - kc) * sizeof (guint16));
    }
  }
}

/* Scatter a band's conv output [rows of cout] pixel-shuffled by s into y
 * (an image of (h·s)×(w·s)×(cout/s²)). */
static void
shuffle_band (const float *band, int w, int y0, int y1, int cout, int s,
    float *y)
{
  for (int yy = y0; yy < y1; yy++)
    for (int xx = 0; xx < w; xx++)
      ehat_shuffle_pixel (band + ((gsize) (yy - y0) * w + xx) * cout, cout,
          s, y, (gsize) w * s, yy, xx);
}

typedef struct
{
  const EhatConvW *cw;
  const EhatGemmB *b;
  const guint16 *xb;            /* x in bf16 (narrow bf16 kind) */
  const float *x, *res;
  float *y;
  int h, w, band, bands, shuffle;
  EhatAct act;
  float alpha;
  float **col, **tmp;           /* per thread */
} ConvJob;

/* Threads take whole bands (im2col, GEMM, epilogue, shuffle): OpenBLAS runs
 * single-threaded inside each, so one pool does all the work and no BLAS
 * thread pool spins against it. */
static void
conv_bands (gpointer data, gsize begin, gsize end, int thread)
{
  const ConvJob *j = data;
  const EhatConvW *cw = j->cw;
  int h = j->h, w = j->w, s = j->shuffle;
  gsize kc = (gsize) cw->k * cw->k * cw->cin;
  int co = cw->cout / (s * s);
  float *col = j->col[thread], *tmp = j->tmp ? j->tmp[thread] : NULL;

  for (gsize task = begin; task < end; task++) {
    gsize i = task / j->bands;
    int bi = task % j->bands;
    const float *xi = j->x + i * h * w * cw->cin;
    float *yi = j->y + i * h * w * s * s * co;
    const float *ri = j->res ? j->res + i * h * w * cw->cout : NULL;
    int y0 = bi * j->band, y1 = MIN (y0 + j->band, h);
    gsize rows = (gsize) (y1 - y0) * w;
    float *dst = tmp ? tmp : yi + (gsize) y0 * w * cw->cout;
    /* The residual may be the output itself (an in-place update): the
     * kernels read each value before they overwrite it. */
    EhatGemmEpi e = { .bias = cw->b, .act = j->act,
      .res = ri ? ri + (gsize) y0 * w * cw->cout : NULL, .alpha = j->alpha
    };

    if (j->b->kind == EHAT_GEMM_NARROW_F32
        || j->b->kind == EHAT_GEMM_NARROW_F32_AVX2) {
      ehat_conv_narrow (j->b, xi, h, w, y0, y1, dst, &e);
    } else if (j->b->kind == EHAT_GEMM_NARROW_BF16) {
      ehat_conv_narrow (j->b, j->xb + i * h * w * ehat_narrow_x_stride (j->b),
          h, w, y0, y1, dst, &e);
    } else if (j->b->kind == EHAT_GEMM_BF16) {
      im2col_bf16 (j->xb + i * h * w * cw->cin, h, w, cw->cin, cw->k, y0, y1,
          (guint16 *) col, j->b->kp);
      ehat_gemm_bf16a (j->b, (guint16 *) col, j->b->kp, rows, dst,
          cw->cout, &e);
    } else {
      im2col (xi, h, w, cw->cin, cw->k, y0, y1, col);
      ehat_gemm (j->b, col, kc, rows, dst, cw->cout, &e, NULL, NULL);
    }
    if (tmp)
      shuffle_band (tmp, w, y0, y1, cw->cout, s, yi);
  }
}

typedef struct
{
  const EhatWinogradB *wb;
  const float *x, *bias, *res;
  float *y;
  int h, w, shuffle, tiles_y, tiles_x, strips, per;
  EhatAct act;
  float alpha;
  float **scratch;              /* per thread */
} WinogradJob;

/* One task per strip of tiles: (image, tile row, strip). */
static void
winograd_strips (gpointer data, gsize begin, gsize end, int thread)
{
  const WinogradJob *j = data;
  int cin = j->wb->b.k, cout = j->wb->b.n;
  gsize hw = (gsize) j->h * j->w;

  for (gsize task = begin; task < end; task++) {
    gsize i = task / ((gsize) j->tiles_y * j->strips);
    int r = task % ((gsize) j->tiles_y * j->strips);
    int tx0 = (r % j->strips) * j->per;
    EhatGemmEpi e = { .bias = j->bias, .act = j->act,
      .res = j->res ? j->res + i * hw * cout : NULL, .alpha = j->alpha
    };
    ehat_winograd_conv (j->wb, j->x + i * hw * cin, j->h, j->w,
        r / j->strips, tx0, MIN (tx0 + j->per, j->tiles_x),
        j->y + i * hw * cout, j->shuffle, &e, j->scratch[thread]);
  }
}

/* A thread's buffer of at least n floats, grown as needed. */
static float *
thread_buffer (float **bufs, gsize *lens, int thread, gsize n)
{
  if (lens[thread] < n) {
    g_free (bufs[thread]);
    bufs[thread] = g_new (float, n);
    lens[thread] = n;
  }
  return bufs[thread];
}

typedef struct
{
  const float *x;
  guint16 *dst;
  int cin, stride;
} CvtJob;

/* Rows of cin floats → bf16 rows of stride (≥ cin, the pad zero). */
static void
to_bf16_rows (gpointer data, gsize begin, gsize end, int thread)
{
  const CvtJob *j = data;
  for (gsize r = begin; r < end; r++) {
    guint16 *d = j->dst + r * j->stride;
    ehat_f32_to_bf16 (d, j->x + r * j->cin, j->cin);
    for (int c = j->cin; c < j->stride; c++)
      d[c] = 0;
  }
}

static inline int
round_up_int (int v, int m)
{
  return (v + m - 1) / m * m;
}

static void
cpu_conv_winograd (EhatCpuBackend *cpu, const EhatConvW *cw, const float *x,
    int n, int h, int w, float *y, EhatAct act, const float *res, float alpha,
    int shuffle)
{
  const EhatWinogradB *wb = (const EhatWinogradB *) cw->w;
  int strip = ehat_winograd_strip (wb), tiles_x = (w + 3) / 4;
  int strips = (tiles_x + strip - 1) / strip;
  g_autofree float **scratch = g_new0 (float *, cpu->n_threads);
  /* strips of equal length */
  WinogradJob j = { wb, x, cw->b, res, y, h, w, shuffle, (h + 3) / 4,
    tiles_x, strips, (tiles_x + strips - 1) / strips, act, alpha, scratch
  };

  for (int t = 0; t < cpu->n_threads; t++)
    scratch[t] = thread_buffer (cpu->conv_col, cpu->conv_col_len, t,
        ehat_winograd_scratch_floats (wb));
  ehat_pool_parallel_for (cpu->pool, (gsize) n * j.tiles_y * strips, 1,
      winograd_strips, &j);
}

/* im2col bands and GEMMs, or the direct narrow kernel */
static void
cpu_conv_gemm (EhatBackend *be, const EhatConvW *cw, const float *x, int n,
    int h, int w, float *y, EhatAct act, const float *res, float alpha,
    int shuffle)
{
  EhatCpuBackend *cpu = CPU (be);
  int nt = cpu->n_threads;
  const EhatGemmB *b = (const EhatGemmB *) cw->w;
  gboolean narrow = ehat_gemm_is_narrow (b);
  gsize kc = (gsize) cw->k * cw->k * cw->cin;
  gsize fit = MAX (BAND_FLOATS / (kc * w), 1);
  /* Bands of rows whose column buffer fits BAND_FLOATS, as many as a
   * multiple of the threads and of equal height, so that no thread waits
   * for another's extra band (HAT's 3×3 convolutions over 180 channels at
   * 64 columns: 7 bands of 10 rows left one of two threads idle an eighth
   * of the time).  The direct (narrow) convolution needs no column buffer:
   * a few bands per thread. */
  int bands = MIN (round_up_int ((int) MAX ((h + fit - 1) / fit,
              (gsize) nt), nt), h);
  int band = narrow ? MAX (1, h / (4 * nt)) : (h + bands - 1) / bands;
  g_autofree float **col = g_new0 (float *, nt);
  g_autofree float **tmp = shuffle > 1 ? g_new0 (float *, nt) : NULL;
  ConvJob j = { cw, b, NULL, x, res, y, h, w, band, (h + band - 1) / band,
    shuffle, act, alpha, col, tmp
  };

  /* bf16 convolutions read the map in bf16, converted once here rather
   * than k·k times in the column buffers */
  if (b->kind == EHAT_GEMM_NARROW_BF16 || b->kind == EHAT_GEMM_BF16) {
    gsize rows = (gsize) n * h * w;
    int cs = b->kind == EHAT_GEMM_BF16 ? cw->cin : ehat_narrow_x_stride (b);
    CvtJob cj = { x, NULL, cw->cin, cs };
    cj.dst = (guint16 *) thread_buffer ((float **) &cpu->xbf, &cpu->xbf_len, 0,
        (rows * cs + 1) / 2);
    ehat_pool_parallel_for (cpu->pool, rows, 256, to_bf16_rows, &cj);
    j.xb = cj.dst;
  }
  for (int t = 0; t < nt; t++) {
    col[t] = narrow ? NULL : thread_buffer (cpu->conv_col, cpu->conv_col_len,
        t, kc * w * band);
    if (tmp)
      tmp[t] = thread_buffer (cpu->conv_tmp, cpu->conv_tmp_len, t,
          (gsize) w * band * cw->cout);
  }
  ehat_pool_parallel_for (cpu->pool, (gsize) n * j.bands, 1, conv_bands, &j);
}

static void
cpu_conv (EhatBackend *be, const EhatConvW *cw, const float *x, int n, int h,
    int w, float *y, EhatAct act, const float *res, float alpha, int shuffle)
{
  if (((const EhatGemmB *) cw->w)->kind == EHAT_GEMM_WINOGRAD)
    cpu_conv_winograd (CPU (be), cw, x, n, h, w, y, act, res, alpha, shuffle);
  else
    cpu_conv_gemm (be, cw, x, n, h, w, y, act, res, alpha, shuffle);
}

/* Rows per block of the fused operations on a thread: LayerNorm's output
 * where OpenBLAS multiplies, the MLP's hidden activations (HAT ×2: 64 ×
 * 360 floats, 92 KiB), each kept in L2 between its producer and its
 * consumer. */
#define BLOCK_ROWS 64

typedef struct
{
  const EhatLinearW *lw;
  const EhatGemmB *b;           /* NULL: OpenBLAS on lw->w */
  const EhatNormW *nw;          /* LayerNorm on x first */
  guint16 **abuf;
  float **block;                /* per thread, with nw and no b */
  const float *x;
  float *y;
  EhatAct act;
  float beta;
  gboolean avx512;              /* the backend's LayerNorm loop */
} LinearJob;

/* y = act(x·Wᵀ + b) + beta·y over rows, by OpenBLAS on W as it is. */
static void
blas_rows (const EhatLinearW *lw, const float *x, gsize rows, float *y,
    EhatAct act, float beta)
{
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, (int) rows, lw->out,
      lw->in, 1.0f, x, lw->in, lw->w, lw->in, beta, y, lw->out);
  epilogue (y, rows, lw->out, lw->b, act, NULL, 0.0f);
}

static void
layernorm_block (const EhatNormW *nw, const float *x, gsize rows, int c,
    float *y, gboolean avx512)
{
  for (gsize r = 0; r < rows; r++)
    ehat_cpu_layernorm_row (nw, x + r * c, c, y + r * c, avx512);
}

/* A block of rows: a single-threaded GEMM plus its epilogue while the rows
 * are still in cache. */
static void
linear_rows (gpointer data, gsize begin, gsize end, int thread)
{
  const LinearJob *j = data;
  const EhatLinearW *lw = j->lw;
  const float *x = j->x + begin * lw->in;
  float *y = j->y + begin * lw->out;

  if (j->b) {
    EhatGemmEpi e = { .bias = lw->b, .act = j->act, .beta = j->beta };
    ehat_gemm (j->b, x, lw->in, end - begin, y, lw->out, &e, j->nw,
        j->abuf[thread]);
    return;
  }
  if (!j->nw) {
    blas_rows (lw, x, end - begin, y, j->act, j->beta);
    return;
  }
  /* OpenBLAS: the LayerNorm a block at a time, through the thread's
   * buffer */
  for (gsize r0 = 0; r0 < end - begin; r0 += BLOCK_ROWS) {
    gsize rows = MIN ((gsize) BLOCK_ROWS, end - begin - r0);
    layernorm_block (j->nw, x + r0 * lw->in, rows, lw->in, j->block[thread],
        j->avx512);
    blas_rows (lw, j->block[thread], rows, y + r0 * lw->out, j->act,
        j->beta);
  }
}

static void
linear_run (EhatCpuBackend *cpu, const EhatLinearW *lw, const EhatNormW *nw,
    const float *x, gsize rows, float *y, EhatAct act, float beta)
{
  LinearJob j = { lw, (const EhatGemmB *) lw->prepared, nw, cpu->abuf,
    cpu->block, x, y, act, beta, cpu->own_f32
  };
  int nt = cpu->n_threads;
  /* several blocks per thread for balance (a thread slowed by the machine
   * takes fewer), each large enough for the GEMM */
  gsize grain = MAX ((rows + 8 * nt - 1) / (8 * nt), 64);

  for (int t = 0; t < nt; t++) {
    if (j.b && (j.b->kind == EHAT_GEMM_BF16 || nw))
      thread_buffer ((float **) cpu->abuf, cpu->abuf_len, t,
          (ehat_gemm_abuf_elems (j.b) + 1) / 2);
    if (!j.b && nw)
      thread_buffer (cpu->block, cpu->block_len, t,
          (gsize) BLOCK_ROWS * lw->in);
  }
  ehat_pool_parallel_for (cpu->pool, rows, grain, linear_rows, &j);
}

static void
cpu_linear (EhatBackend *be, const EhatLinearW *lw, const float *x,
    gsize rows, float *y, EhatAct act, float beta)
{
  linear_run (CPU (be), lw, NULL, x, rows, y, act, beta);
}

typedef struct
{
  const EhatNormW *nw;
  const float *x;
  float *y;
  int c;
  gboolean avx512;
} NormJob;

static void
layernorm_rows (gpointer data, gsize begin, gsize end, int thread)
{
  const NormJob *j = data;

  layernorm_block (j->nw, j->x + begin * j->c, end - begin, j->c,
      j->y + begin * j->c, j->avx512);
}

static void
cpu_layernorm (EhatBackend *be, const EhatNormW *nw, const float *x,
    gsize rows, int c, float *y)
{
  NormJob j = { nw, x, y, c, CPU (be)->own_f32 };
  ehat_pool_parallel_for (CPU (be)->pool, rows, 64, layernorm_rows, &j);
}

static void
cpu_norm_linear (EhatBackend *be, const EhatNormW *nw, const EhatLinearW *lw,
    const float *x, gsize rows, float *y, EhatAct act)
{
  linear_run (CPU (be), lw, nw, x, rows, y, act, 0.0f);
}

typedef struct
{
  const EhatNormW *nw;
  const EhatLinearW *fc1, *fc2;
  const float *x;
  float *y;
  float beta;
  float *acc;
  float acc_w;
  float **buf;
  guint16 **abuf;
  gboolean avx512;
} MlpJob;

static void
mlp_rows (gpointer data, gsize begin, gsize end, int thread)
{
  const MlpJob *j = data;
  const EhatLinearW *fc1 = j->fc1, *fc2 = j->fc2;
  const EhatGemmB *b1 = fc1->prepared, *b2 = fc2->prepared;
  float *hid = j->buf[thread], *n = hid + (gsize) BLOCK_ROWS * fc1->out;

  for (gsize r0 = begin; r0 < end; r0 += BLOCK_ROWS) {
    gsize rows = MIN ((gsize) BLOCK_ROWS, end - r0);
    const float *x = j->x + r0 * fc1->in;
    float *y = j->y + r0 * fc2->out;

    /* the block's x is read (fc1) before its y is written (fc2): y may
     * be x */
    if (b1 && b2) {
      EhatGemmEpi e1 = { .bias = fc1->b, .act = EHAT_ACT_GELU };
      EhatGemmEpi e2 = { .bias = fc2->b, .act = EHAT_ACT_NONE,
        .beta = j->beta, .acc = j->acc ? j->acc + r0 * fc2->out : NULL,
        .acc_w = j->acc_w
      };
      ehat_gemm (b1, x, fc1->in, rows, hid, fc1->out, &e1, j->nw,
          j->abuf[thread]);
      ehat_gemm (b2, hid, fc1->out, rows, y, fc2->out, &e2, NULL,
          j->abuf[thread]);
      continue;
    }
    /* OpenBLAS on W as it is */
    layernorm_block (j->nw, x, rows, fc1->in, n, j->avx512);
    blas_rows (fc1, n, rows, hid, EHAT_ACT_GELU, 0.0f);
    blas_rows (fc2, hid, rows, y, EHAT_ACT_NONE, j->beta);
    if (j->acc) {
      float *acc = j->acc + r0 * fc2->out;
      for (gsize i = 0; i < rows * fc2->out; i++)
        acc[i] += j->acc_w * y[i];
    }
  }
}

static void
cpu_mlp (EhatBackend *be, const EhatNormW *nw, const EhatLinearW *fc1,
    const EhatLinearW *fc2, const float *x, gsize rows, float *y, float beta,
    float *acc, float acc_w)
{
  EhatCpuBackend *cpu = CPU (be);
  MlpJob j = { nw, fc1, fc2, x, y, beta, acc, acc_w, cpu->block,
    cpu->abuf, cpu->own_f32
  };
  const EhatGemmB *b1 = fc1->prepared, *b2 = fc2->prepared;
  int nt = cpu->n_threads;
  gsize grain = MAX ((rows + 8 * nt - 1) / (8 * nt), BLOCK_ROWS);

  g_assert (fc1->out == fc2->in);
  for (int t = 0; t < nt; t++) {
    thread_buffer (cpu->block, cpu->block_len, t,
        (gsize) BLOCK_ROWS * (fc1->out + fc1->in));
    if (b1 && b2)
      thread_buffer ((float **) cpu->abuf, cpu->abuf_len, t,
          (MAX (ehat_gemm_abuf_elems (b1), ehat_gemm_abuf_elems (b2)) + 1)
          / 2);
  }
  ehat_pool_parallel_for (cpu->pool, rows, grain, mlp_rows, &j);
}

typedef struct
{
  float *y;
  const float *x;
  float a, b;
} AxpbyJob;

EHAT_CLONES static void
axpby_range (gpointer data, gsize begin, gsize end, int thread)
{
  const AxpbyJob *j = data;
  float *y = j->y;
  const float *x = j->x;
  float a = j->a, b = j->b;

  if (b == 0.0f) {
    /* y may be uninitialised: never read it (0·NaN would be NaN). */
#pragma omp simd
    for (gsize i = begin; i < end; i++)
      y[i] = a * x[i];
  } else {
#pragma omp simd
    for (gsize i = begin; i < end; i++)
      y[i] = a * x[i] + b * y[i];
  }
}

static void
cpu_axpby (EhatBackend *be, float *y, float a, const float *x, float b,
    gsize n)
{
  AxpbyJob j = { y, x, a, b };
  ehat_pool_parallel_for (CPU (be)->pool, n, 1 << 15, axpby_range, &j);
}

typedef struct
{
  const float *v;
  float *vw;
  double *partial;              /* [chunk][c] sums */
  const float *scale;
  gsize grain;
  int c;
  /* channel_attention_add: t = w1·t + alpha·(v·scale + w0·x0) */
  const float *x0;
  float *t;
  float w0, alpha, w1;
} CaJob;

#define CA_GRAIN 1024

/* The range may span several chunks (one thread, or a short map): each
 * chunk's sum goes to its own slot all the same. */
static void
ca_sums (gpointer data, gsize begin, gsize end, int thread)
{
  const CaJob *j = data;

  for (gsize c0 = begin; c0 < end; c0 += j->grain) {
    double *acc = j->partial + (c0 / j->grain) * j->c;
    for (int k = 0; k < j->c; k++)
      acc[k] = 0.0;
    for (gsize r = c0; r < MIN (c0 + j->grain, end); r++)
      for (int k = 0; k < j->c; k++)
        acc[k] += j->v[r * j->c + k];
  }
}

static void
ca_scale (gpointer data, gsize begin, gsize end, int thread)
{
  const CaJob *j = data;
  for (gsize r = begin; r < end; r++)
    for (int k = 0; k < j->c; k++)
      j->vw[r * j->c + k] *= j->scale[k];
}

/* The scaling pass with the residual sums around CAB folded in: the
 * expressions of the ops it replaces (axpby's a·x + b·y; the compiler may
 * contract them into fmas differently, a rounding apart). */
EHAT_CLONES static void
ca_add (gpointer data, gsize begin, gsize end, int thread)
{
  const CaJob *j = data;
  int c = j->c;
  float w0 = j->w0, alpha = j->alpha, w1 = j->w1;

  for (gsize r = begin; r < end; r++) {
    const float *v = j->v + r * c, *x0 = j->x0 ? j->x0 + r * c : NULL;
    float *t = j->t + r * c;
#pragma omp simd
    for (int k = 0; k < c; k++) {
      float a = v[k] * j->scale[k];
      if (x0)
        a = w0 * x0[k] + a;
      t[k] = w1 == 0.0f ? alpha * a : alpha * a + w1 * t[k];
    }
  }
}

/* σ(up(ReLU(down(mean of v over hw rows)))) into scale[c]. */
static void
ca_gate (EhatBackend *be, const EhatLinearW *down, const EhatLinearW *up,
    CaJob *j, gsize hw, float *mid, float *scale)
{
  const double *partial = j->partial;
  gsize chunks = (hw + CA_GRAIN - 1) / CA_GRAIN;
  int c = j->c;

  /* Sums in double, per fixed chunk and added in chunk order: the mean
   * runs over up to millions of rows, and the result must not depend on
   * which thread took which chunk. */
  ehat_pool_parallel_for (CPU (be)->pool, hw, CA_GRAIN, ca_sums, j);
  for (int o = 0; o < down->out; o++) {
    float s = down->b[o];
    for (int k = 0; k < c; k++) {
      double sum = 0.0;
      for (gsize ch = 0; ch < chunks; ch++)
        sum += partial[ch * c + k];
      s += down->w[(gsize) o * c + k] * (float) (sum / hw);
    }
    mid[o] = s > 0.0f ? s : 0.0f;
  }
  for (int o = 0; o < c; o++) {
    float s = up->b[o];
    for (int k = 0; k < down->out; k++)
      s += up->w[(gsize) o * down->out + k] * mid[k];
    scale[o] = 1.0f / (1.0f + expf (-s));
  }
}

/* v ·= gate (x0 NULL, t NULL), or t = w1·t + alpha·(v·gate + w0·x0). */
static void
channel_attention_run (EhatBackend *be, const EhatLinearW *down,
    const EhatLinearW *up, float *v, int n, gsize hw, int c, float w0,
    const float *x0, float alpha, float w1, float *t)
{
  gsize chunks = (hw + CA_GRAIN - 1) / CA_GRAIN;
  g_autofree double *partial = g_new (double, chunks * c);
  g_autofree float *mid = g_new (float, down->out);
  g_autofree float *scale = g_new (float, c);

  for (int i = 0; i < n; i++) {
    gsize at = (gsize) i * hw * c;
    CaJob j = { v + at, v + at, partial, scale, CA_GRAIN, c,
      x0 ? x0 + at : NULL, t ? t + at : NULL, w0, alpha, w1
    };

    ca_gate (be, down, up, &j, hw, mid, scale);
    ehat_pool_parallel_for (CPU (be)->pool, hw, 256, t ? ca_add : ca_scale,
        &j);
  }
}

static void
cpu_channel_attention (EhatBackend *be, const EhatLinearW *down,
    const EhatLinearW *up, float *v, int n, gsize hw, int c)
{
  channel_attention_run (be, down, up, v, n, hw, c, 0.0f, NULL, 0.0f, 0.0f,
      NULL);
}

static void
cpu_channel_attention_add (EhatBackend *be, const EhatLinearW *down,
    const EhatLinearW *up, const float *v, int n, gsize hw, int c, float w0,
    const float *x0, float alpha, float w1, float *t)
{
  /* v is only read on this path */
  channel_attention_run (be, down, up, (float *) v, n, hw, c, w0, x0, alpha,
      w1, t);
}

static gboolean
cpu_sync (EhatBackend *be, GError **error)
{
  return TRUE;
}

static const EhatBackendOps cpu_ops = {
  .destroy = cpu_destroy,
  .describe = cpu_describe,
  .alloc = cpu_alloc,
  .free = cpu_free,
  .upload = cpu_upload,
  .borrow = cpu_borrow,
  .unborrow = cpu_unborrow,
  .upload_index = cpu_upload_index,
  .upload_conv = cpu_upload_conv,
  .prepare_linear = cpu_prepare_linear,
  .release_linear = cpu_release_linear,
  .input = cpu_input,
  .output = cpu_output,
  .conv = cpu_conv,
  .linear = cpu_linear,
  .norm_linear = cpu_norm_linear,
  .mlp = cpu_mlp,
  .layernorm = cpu_layernorm,
  .axpby = cpu_axpby,
  .window_attention = ehat_cpu_window_attention,
  .overlap_attention = ehat_cpu_overlap_attention,
  .channel_attention = cpu_channel_attention,
  .channel_attention_add = cpu_channel_attention_add,
  .position_attention = ehat_cpu_position_attention,
  .channel_gram_attention = ehat_cpu_channel_gram_attention,
  .sync = cpu_sync,
};

EhatBackend *
ehat_backend_cpu_new (int n_threads, GError **error)
{
  return ehat_backend_cpu_new_full (n_threads, FALSE, error);
}

EhatBackend *
ehat_backend_cpu_new_full (int n_threads, gboolean bf16, GError **error)
{
  EhatCpuBackend *cpu = g_new0 (EhatCpuBackend, 1);
  const char *blas = openblas_get_config ();

  if (n_threads <= 0)
    n_threads = (int) g_get_num_processors ();
  cpu->parent.ops = &cpu_ops;
  cpu->parent.kind = EHAT_BACKEND_CPU;
  cpu->parent.act_bytes = sizeof (float);
  cpu->parent.precision = EHAT_PRECISION_FP32;
  cpu->n_threads = n_threads;
  cpu->pool = ehat_pool_new (n_threads);
  cpu->conv_col = g_new0 (float *, n_threads);
  cpu->conv_tmp = g_new0 (float *, n_threads);
  cpu->conv_col_len = g_new0 (gsize, n_threads);
  cpu->conv_tmp_len = g_new0 (gsize, n_threads);
  cpu->abuf = g_new0 (guint16 *, n_threads);
  cpu->abuf_len = g_new0 (gsize, n_threads);
  cpu->block = g_new0 (float *, n_threads);
  cpu->block_len = g_new0 (gsize, n_threads);
  cpu->own_f32 = ehat_cpu_has_avx512 ();
  cpu->f32_kind = cpu->own_f32 ? EHAT_GEMM_F32 : ehat_cpu_has_avx2 ()
      ? EHAT_GEMM_F32_AVX2 : EHAT_GEMM_BLAS;
  cpu->bf16 = bf16 && ehat_cpu_has_bf16 ();
  if (cpu->bf16)
    cpu->parent.precision = EHAT_PRECISION_BF16;
  /* Parallelism comes from our pool, each task calling OpenBLAS
   * single-threaded (OpenBLAS's documented mode for threaded callers); its
   * own pool would spin against ours on every call. */
  openblas_set_num_threads (1);
  cpu->description = g_strdup_printf ("cpu (%d thread%s, %s, %s)",
      n_threads, n_threads == 1 ? "" : "s", blas ? blas : "cblas",
      cpu->bf16 ? "bf16: AVX512-BF16 products, fp32 accumulation"
      : cpu->f32_kind == EHAT_GEMM_F32 ? "fp32 AVX-512"
      : cpu->f32_kind == EHAT_GEMM_F32_AVX2 ? "fp32 AVX2" : "fp32");
  return &cpu->parent;
}
