/* Frame ↔ planar float RGB conversion (ehat-frame). */
#include "ehat.h"
#include "ehat-frame.h"
#include "smooth-image.h"

#include <math.h>
#include <string.h>

/* A frame with padded strides (to catch stride bugs) in one allocation per
 * plane. */
static void
frame_alloc (EhatFrame *f, EhatPixelFormat format, int w, int h)
{
  int p;

  memset (f, 0, sizeof (*f));
  f->format = format;
  f->width = w;
  f->height = h;
  for (p = 0; p < ehat_pixel_format_n_planes (format); p++) {
    int stride, rows;
    g_assert_true (ehat_frame_plane_size (format, w, h, p, &stride, &rows));
    f->stride[p] = stride + 7;
    f->data[p] = g_malloc0 ((gsize) f->stride[p] * rows);
  }
}

static guint32
read_le32 (const guint8 *p)
{
  return p[0] | p[1] << 8 | p[2] << 16 | (guint32) p[3] << 24;
}

static void
frame_free (EhatFrame *f)
{
  int p;
  for (p = 0; p < EHAT_FRAME_MAX_PLANES; p++)
    g_free (f->data[p]);
}

static void
test_rgb_exact (void)
{
  static const EhatPixelFormat fmts[] = {
    EHAT_PIXEL_RGB, EHAT_PIXEL_BGR, EHAT_PIXEL_RGBA, EHAT_PIXEL_BGRA,
    EHAT_PIXEL_RGBx, EHAT_PIXEL_BGRx, EHAT_PIXEL_xRGB, EHAT_PIXEL_xBGR,
    EHAT_PIXEL_ARGB, EHAT_PIXEL_ABGR, EHAT_PIXEL_RGBA64_LE,
    EHAT_PIXEL_BGRA64_LE, EHAT_PIXEL_ARGB64_LE, EHAT_PIXEL_ABGR64_LE,
    EHAT_PIXEL_ARGB64,
  };
  GRand *r = g_rand_new_with_seed (7);
  guint i;

  for (i = 0; i < G_N_ELEMENTS (fmts); i++) {
    int w = 13, h = 5, y, stride, rows;
    EhatFrame a, b;
    float *rgb = g_new (float, 3 * w * h), *alpha = g_new (float, w * h);
    gboolean has_alpha = ehat_pixel_format_has_alpha (fmts[i]);
    GError *err = NULL;

    frame_alloc (&a, fmts[i], w, h);
    frame_alloc (&b, fmts[i], w, h);
    ehat_frame_plane_size (fmts[i], w, h, 0, &stride, &rows);
    for (y = 0; y < h; y++) {
      int x;
      for (x = 0; x < stride; x++)
        a.data[0][y * a.stride[0] + x] = g_rand_int_range (r, 0, 256);
      /* padding bytes of x formats are written as 0xff */
      if (!has_alpha && stride == 4 * w)
        for (x = 0; x < w; x++) {
          int pad = (fmts[i] == EHAT_PIXEL_xRGB
              || fmts[i] == EHAT_PIXEL_xBGR) ? 0 : 3;
          a.data[0][y * a.stride[0] + 4 * x + pad] = 0xff;
        }
    }
    g_assert_true (ehat_frame_read (&a, NULL, rgb, &err));
    g_assert_no_error (err);
    if (has_alpha)
      g_assert_true (ehat_frame_read_alpha (&a, alpha, &err));
    else {
      g_assert_false (ehat_frame_read_alpha (&a, alpha, &err));
      g_clear_error (&err);
    }
    g_assert_true (ehat_frame_write (rgb, has_alpha ? alpha : NULL, NULL, &b,
            &err));
    g_assert_no_error (err);
    for (y = 0; y < h; y++)
      g_assert_cmpmem (a.data[0] + y * a.stride[0], stride,
          b.data[0] + y * b.stride[0], stride);
    frame_free (&a);
    frame_free (&b);
    g_free (rgb);
    g_free (alpha);
  }
  g_rand_free (r);
}

/* Planar R'G'B' (GStreamer's GBR: planes G, B, R; GBRA: alpha plane 3):
 * every code survives a read and a write at every depth, and plane 2 is
 * red. */
static void
test_planar_rgb (void)
{
  static const EhatPixelFormat fmts[] = {
    EHAT_PIXEL_GBR, EHAT_PIXEL_GBR_10LE, EHAT_PIXEL_GBR_12LE,
    EHAT_PIXEL_GBRA, EHAT_PIXEL_GBRA_10LE, EHAT_PIXEL_GBRA_12LE,
  };
  GRand *r = g_rand_new_with_seed (11);

  for (guint i = 0; i < G_N_ELEMENTS (fmts); i++) {
    const int w = 9, h = 4, depth = ehat_pixel_format_depth (fmts[i]);
    const int np = ehat_pixel_format_n_planes (fmts[i]);
    float rgb[3 * 9 * 4], alpha[9 * 4];
    gboolean has_alpha = ehat_pixel_format_has_alpha (fmts[i]);
    EhatFrame a, b;

    g_assert_cmpint (np, ==, has_alpha ? 4 : 3);
    frame_alloc (&a, fmts[i], w, h);
    frame_alloc (&b, fmts[i], w, h);
    for (int p = 0; p < np; p++)
      for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
          int v = g_rand_int_range (r, 0, 1 << depth);
          guint8 *row = a.data[p] + y * a.stride[p];

          if (depth > 8) {
            row[2 * x] = v & 0xff;
            row[2 * x + 1] = v >> 8;
          } else {
            row[x] = v;
          }
        }
    g_assert_true (ehat_frame_read (&a, NULL, rgb, NULL));
    g_assert_true (!has_alpha || ehat_frame_read_alpha (&a, alpha, NULL));
    g_assert_true (ehat_frame_write (rgb, has_alpha ? alpha : NULL, NULL, &b,
            NULL));
    for (int p = 0; p < np; p++)
      for (int y = 0; y < h; y++)
        g_assert_cmpmem (a.data[p] + y * a.stride[p], w * (depth > 8 ? 2 : 1),
            b.data[p] + y * b.stride[p], w * (depth > 8 ? 2 : 1));

    /* full scale in plane 2 only: red */
    for (int p = 0; p < 3; p++)
      for (int y = 0; y < h; y++)
        memset (a.data[p] + y * a.stride[p], p == 2 ? 0xff : 0,
            w * (depth > 8 ? 2 : 1));
    if (depth > 8)
      for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
          a.data[2][y * a.stride[2] + 2 * x + 1] = (1 << (depth - 8)) - 1;
    g_assert_true (ehat_frame_read (&a, NULL, rgb, NULL));
    g_assert_cmpfloat (rgb[0], ==, 1.0f);
    g_assert_cmpfloat (rgb[w * h], ==, 0.0f);
    g_assert_cmpfloat (rgb[2 * w * h], ==, 0.0f);
    frame_free (&a);
    frame_free (&b);
  }
  g_rand_free (r);
}

static void
test_rgb_channel_order (void)
{
  /* pure red in every packed layout */
  static const struct
  {
    EhatPixelFormat f;
    guint8 px[4];
  } cases[] = {
    {EHAT_PIXEL_RGB, {255, 0, 0}}, {EHAT_PIXEL_BGR, {0, 0, 255}},
    {EHAT_PIXEL_RGBA, {255, 0, 0, 255}}, {EHAT_PIXEL_BGRA, {0, 0, 255, 255}},
    {EHAT_PIXEL_RGBx, {255, 0, 0, 255}}, {EHAT_PIXEL_BGRx, {0, 0, 255, 255}},
    {EHAT_PIXEL_xRGB, {255, 255, 0, 0}}, {EHAT_PIXEL_xBGR, {255, 0, 0, 255}},
    {EHAT_PIXEL_ARGB, {255, 255, 0, 0}}, {EHAT_PIXEL_ABGR, {255, 0, 0, 255}},
  };
  float red[3] = { 1.0f, 0.0f, 0.0f };
  guint i;

  for (i = 0; i < G_N_ELEMENTS (cases); i++) {
    guint8 buf[4] = { 1, 2, 3, 4 };
    EhatFrame f = { cases[i].f, 1, 1, {buf}, {4} };
    int bpp = cases[i].f == EHAT_PIXEL_RGB || cases[i].f == EHAT_PIXEL_BGR ?
        3 : 4;

    g_assert_true (ehat_frame_write (red, NULL, NULL, &f, NULL));
    g_assert_cmpmem (buf, bpp, cases[i].px, bpp);
  }
  /* and in 16-bit words (LE), alpha 0.5 */
  {
    static const struct
    {
      EhatPixelFormat f;
      guint16 px[4];
    } deep[] = {
      {EHAT_PIXEL_RGBA64_LE, {65535, 0, 0, 32768}},
      {EHAT_PIXEL_BGRA64_LE, {0, 0, 65535, 32768}},
      {EHAT_PIXEL_ARGB64_LE, {32768, 65535, 0, 0}},
      {EHAT_PIXEL_ABGR64_LE, {32768, 0, 0, 65535}},
      {EHAT_PIXEL_ARGB64, {32768, 65535, 0, 0}},
    };
    float half = 0.5f;

    for (i = 0; i < G_N_ELEMENTS (deep); i++) {
      guint8 buf[8] = { 0, };
      EhatFrame f = { deep[i].f, 1, 1, {buf}, {8} };

      g_assert_true (ehat_frame_write (red, &half, NULL, &f, NULL));
      for (int k = 0; k < 4; k++)
        g_assert_cmpint (buf[2 * k] | buf[2 * k + 1] << 8, ==,
            deep[i].px[k]);
    }
  }
}

/* Packed Y'CbCr, sample by sample (limited range, BT.709): 4:2:2
 * macropixels of an odd width (white, white, black: the last macropixel's
 * unused luma repeats the black pixel's), and 4:4:4 with alpha (white at
 * alpha 0.5, black opaque); 16-bit words LE, values in their MSBs.  And
 * what they read back. */
static void
test_packed_yuv (void)
{
  static const struct
  {
    EhatPixelFormat f;
    int w, shift;
    int s[8];
  } cases[] = {
    /* W, B: white and black luma, C: mid chroma (8-bit codes) */
#define W 235
#define B 16
#define C 128
    {EHAT_PIXEL_YUY2, 3, 0, {W, C, W, C, B, C, B, C}},
    {EHAT_PIXEL_UYVY, 3, 0, {C, W, C, W, C, B, C, B}},
    {EHAT_PIXEL_YVYU, 3, 0, {W, C, W, C, B, C, B, C}},
    {EHAT_PIXEL_Y210, 3, 2 + 6, {W, C, W, C, B, C, B, C}},
    {EHAT_PIXEL_Y212_LE, 3, 4 + 4, {W, C, W, C, B, C, B, C}},
    /* 4:4:4: alpha 0.5 is code 128 */
    {EHAT_PIXEL_AYUV, 2, 0, {128, W, C, C, 255, B, C, C}},
    {EHAT_PIXEL_VUYA, 2, 0, {C, C, W, 128, C, C, B, 255}},
#undef W
#undef B
#undef C
  };
  EhatColorInfo ci = { EHAT_MATRIX_BT709, EHAT_RANGE_LIMITED,
    EHAT_CHROMA_CENTER
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
    int w = cases[i].w, deep = ehat_pixel_format_depth (cases[i].f) > 8;
    float img[3 * 3], back[3 * 3], alpha[3] = { 0.5f, 1.0f, 1.0f }, a[3];
    EhatFrame f;

    for (int c = 0; c < 3; c++)
      for (int k = 0; k < w; k++)
        img[c * w + k] = k < w - 1 ? 1.0f : 0.0f;
    frame_alloc (&f, cases[i].f, w, 1);
    memset (f.data[0], 0xee, f.stride[0]);
    g_assert_true (ehat_frame_write (img, alpha, &ci, &f, NULL));
    for (int k = 0; k < 8; k++) {
      int v = deep ? f.data[0][2 * k] | f.data[0][2 * k + 1] << 8 :
          f.data[0][k];
      /* 8-bit codes × 4 (10 bits) or × 16 (12), in the MSBs: ≪ 2+6 */
      g_assert_cmpint (v, ==, cases[i].s[k] << cases[i].shift);
    }
    g_assert_true (ehat_frame_read (&f, &ci, back, NULL));
    for (int c = 0; c < 3; c++)
      for (int k = 0; k < w; k++)
        g_assert_cmpfloat (back[c * w + k], ==, img[c * w + k]);
    if (ehat_pixel_format_has_alpha (cases[i].f)) {
      g_assert_true (ehat_frame_read_alpha (&f, a, NULL));
      g_assert_cmpfloat (a[0], ==, 128 / 255.0f);
      g_assert_cmpfloat (a[1], ==, 1.0f);
    } else {
      g_assert_false (ehat_frame_read_alpha (&f, a, NULL));
    }
    frame_free (&f);
  }

  /* planar Y'CbCr with alpha: the alpha plane's codes survive a read and
   * a write exactly (8 and 10 bits), Y'CbCr planes untouched by them */
  {
    static const EhatPixelFormat fmts[] = { EHAT_PIXEL_A420,
      EHAT_PIXEL_A420_10LE, EHAT_PIXEL_A422_10LE, EHAT_PIXEL_A444_10LE
    };
    GRand *r = g_rand_new_with_seed (5);

    for (guint i = 0; i < G_N_ELEMENTS (fmts); i++) {
      const int w = 5, h = 3, depth = ehat_pixel_format_depth (fmts[i]);
      const int bytes = depth > 8 ? 2 : 1;
      float rgb[3 * 5 * 3], alpha[5 * 3];
      EhatFrame a, b;

      g_assert_cmpint (ehat_pixel_format_n_planes (fmts[i]), ==, 4);
      frame_alloc (&a, fmts[i], w, h);
      frame_alloc (&b, fmts[i], w, h);
      for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
          int v = g_rand_int_range (r, 0, 1 << depth);
          guint8 *px = a.data[3] + y * a.stride[3] + bytes * x;

          px[0] = v & 0xff;
          if (bytes == 2)
            px[1] = v >> 8;
        }
      g_assert_true (ehat_frame_read (&a, &ci, rgb, NULL));
      g_assert_true (ehat_frame_read_alpha (&a, alpha, NULL));
      g_assert_true (ehat_frame_write (rgb, alpha, &ci, &b, NULL));
      for (int y = 0; y < h; y++)
        g_assert_cmpmem (a.data[3] + y * a.stride[3], w * bytes,
            b.data[3] + y * b.stride[3], w * bytes);
      /* without alpha given: opaque */
      g_assert_true (ehat_frame_write (rgb, NULL, &ci, &b, NULL));
      g_assert_cmpint (b.data[3][bytes - 1], ==,
          bytes == 2 ? ((1 << depth) - 1) >> 8 : 255);
      frame_free (&a);
      frame_free (&b);
    }
    g_rand_free (r);
  }

  /* v210: UYVY's samples three to a 32-bit word from bit 0, top bits
   * zero; 8 pixels fill two groups of six, the second's padding written
   * with the last pixel's luma and chroma clamped to the frame */
  {
    enum
    { W = 940, B = 64, C = 512 };
    static const guint32 want[8] = {
      C | W << 10 | C << 20, W | C << 10 | W << 20,
      C | W << 10 | C << 20, W | C << 10 | W << 20,
      C | W << 10 | C << 20, B | C << 10 | B << 20,
      C | B << 10 | C << 20, B | C << 10 | B << 20,
    };
    float img[3 * 8], back[3 * 8];
    int stride, rows;
    EhatFrame f;

    for (int k = 0; k < 3 * 8; k++)
      img[k] = k % 8 < 7 ? 1.0f : 0.0f;
    frame_alloc (&f, EHAT_PIXEL_v210, 8, 1);
    memset (f.data[0], 0xee, f.stride[0]);
    g_assert_true (ehat_frame_write (img, NULL, &ci, &f, NULL));
    for (int k = 0; k < 8; k++)
      g_assert_cmphex (read_le32 (f.data[0] + 4 * k), ==, want[k]);
    g_assert_true (ehat_frame_read (&f, &ci, back, NULL));
    for (int k = 0; k < 3 * 8; k++)
      g_assert_cmpfloat (back[k], ==, img[k]);
    frame_free (&f);
    /* whole groups of 16 bytes: GStreamer's 128-byte rows at 48 pixels */
    for (int w = 1; w <= 48; w++) {
      g_assert_true (ehat_frame_plane_size (EHAT_PIXEL_v210, w, 3, 0,
              &stride, &rows));
      g_assert_cmpint (stride, ==, (w + 5) / 6 * 16);
      g_assert_cmpint (rows, ==, 3);
    }
    g_assert_cmpint (stride, ==, 128);
  }

  /* 4:4:4 without alpha: Y410's top bits and Y412_LE's fourth sample
   * written opaque, as GStreamer writes them; U Y V in that order */
  {
    enum
    { W10 = 940, B10 = 64, C10 = 512 };
    static const guint32 want410[2] = {
      C10 | W10 << 10 | C10 << 20 | 3u << 30,
      C10 | B10 << 10 | C10 << 20 | 3u << 30,
    };
    static const int want412[8] = { 32768, 60160, 32768, 65520, 32768, 4096,
      32768, 65520
    };
    float img[6] = { 1, 0, 1, 0, 1, 0 }, back[6];
    EhatFrame f;

    frame_alloc (&f, EHAT_PIXEL_Y410, 2, 1);
    g_assert_true (ehat_frame_write (img, NULL, &ci, &f, NULL));
    for (int k = 0; k < 2; k++)
      g_assert_cmphex (read_le32 (f.data[0] + 4 * k), ==, want410[k]);
    g_assert_true (ehat_frame_read (&f, &ci, back, NULL));
    g_assert_cmpmem (back, sizeof (back), img, sizeof (img));
    frame_free (&f);
    frame_alloc (&f, EHAT_PIXEL_Y412_LE, 2, 1);
    memset (f.data[0], 0, f.stride[0]);
    g_assert_true (ehat_frame_write (img, NULL, &ci, &f, NULL));
    for (int k = 0; k < 8; k++)
      g_assert_cmpint (f.data[0][2 * k] | f.data[0][2 * k + 1] << 8, ==,
          want412[k]);
    g_assert_true (ehat_frame_read (&f, &ci, back, NULL));
    g_assert_cmpmem (back, sizeof (back), img, sizeof (img));
    g_assert_false (ehat_pixel_format_has_alpha (EHAT_PIXEL_Y412_LE));
    frame_free (&f);
  }

  /* AYUV64: 16-bit alpha, luma and chroma */
  {
    static const int want[8] = { 32768, 60160, 32768, 32768, 65535, 4096,
      32768, 32768
    };
    float img[6] = { 1, 0, 1, 0, 1, 0 }, alpha[2] = { 0.5f, 1.0f };
    EhatFrame f;

    frame_alloc (&f, EHAT_PIXEL_AYUV64, 2, 1);
    g_assert_true (ehat_frame_write (img, alpha, &ci, &f, NULL));
    for (int k = 0; k < 8; k++)
      g_assert_cmpint (f.data[0][2 * k] | f.data[0][2 * k + 1] << 8, ==,
          want[k]);
    frame_free (&f);
  }
}

/* Formats that differ from another only in the order of U and V (NV61 /
 * NV16, VYUY / UYVY, NV21 / NV12, YVYU / YUY2), at odd sizes: the same
 * coloured image written in both gives the same bytes with each U/V pair
 * swapped, and reads back the same. */
static void
test_swapped_chroma (void)
{
  static const struct
  {
    EhatPixelFormat f, ref;
    int plane, step, u;         /* chroma plane, its step, ref's U */
  } pairs[] = {
    {EHAT_PIXEL_NV61, EHAT_PIXEL_NV16, 1, 2, 0},
    {EHAT_PIXEL_NV21, EHAT_PIXEL_NV12, 1, 2, 0},
    {EHAT_PIXEL_VYUY, EHAT_PIXEL_UYVY, 0, 4, 0},
    {EHAT_PIXEL_YVYU, EHAT_PIXEL_YUY2, 0, 4, 1},
  };
  const int w = 7, h = 3;
  g_autofree float *img = g_new (float, 3 * w * h);
  g_autofree float *back = g_new (float, 3 * w * h);
  g_autofree float *want = g_new (float, 3 * w * h);
  EhatColorInfo ci = { EHAT_MATRIX_BT709, EHAT_RANGE_LIMITED,
    EHAT_CHROMA_LEFT
  };

  for (int k = 0; k < w * h; k++) {
    img[k] = (k % w) / (w - 1.0f);
    img[w * h + k] = 0.3f;
    img[2 * w * h + k] = 1.0f - (k / w) / (h - 1.0f);
  }
  for (guint i = 0; i < G_N_ELEMENTS (pairs); i++) {
    int stride, rows, other = pairs[i].step / 2;
    EhatFrame f, r;

    frame_alloc (&f, pairs[i].f, w, h);
    frame_alloc (&r, pairs[i].ref, w, h);
    g_assert_true (ehat_frame_write (img, NULL, &ci, &f, NULL));
    g_assert_true (ehat_frame_write (img, NULL, &ci, &r, NULL));
    ehat_frame_plane_size (pairs[i].f, w, h, pairs[i].plane, &stride, &rows);
    for (int y = 0; y < rows; y++) {
      const guint8 *a = f.data[pairs[i].plane] + y * f.stride[pairs[i].plane];
      const guint8 *b = r.data[pairs[i].plane] + y * r.stride[pairs[i].plane];

      for (int j = 0; j < stride / pairs[i].step; j++) {
        int u = j * pairs[i].step + pairs[i].u, v = u + other;

        /* the colour differences vary: a swap cannot pass unseen */
        g_assert_cmpint (b[u], !=, b[v]);
        g_assert_cmpint (a[u], ==, b[v]);
        g_assert_cmpint (a[v], ==, b[u]);
      }
    }
    g_assert_true (ehat_frame_read (&f, &ci, back, NULL));
    g_assert_true (ehat_frame_read (&r, &ci, want, NULL));
    g_assert_cmpmem (back, sizeof (float) * 3 * w * h, want,
        sizeof (float) * 3 * w * h);
    frame_free (&f);
    frame_free (&r);
  }
}

typedef struct
{
  EhatPixelFormat f;
  double max_err;               /* max abs error of a smooth round trip */
} YuvCase;

static void
test_yuv_round_trip (void)
{
  static const YuvCase cases[] = {
    {EHAT_PIXEL_Y444, 0.012}, {EHAT_PIXEL_I420, 0.03},
    {EHAT_PIXEL_YV12, 0.03}, {EHAT_PIXEL_NV12, 0.03},
    {EHAT_PIXEL_NV21, 0.03}, {EHAT_PIXEL_I420_10LE, 0.02},
    {EHAT_PIXEL_P010_10LE, 0.02}, {EHAT_PIXEL_Y42B, 0.03},
    {EHAT_PIXEL_NV16, 0.03}, {EHAT_PIXEL_I422_10LE, 0.02},
    {EHAT_PIXEL_I422_12LE, 0.02}, {EHAT_PIXEL_Y444_10LE, 0.004},
    {EHAT_PIXEL_Y444_12LE, 0.002}, {EHAT_PIXEL_Y444_16LE, 0.001},
    {EHAT_PIXEL_I420_12LE, 0.02}, {EHAT_PIXEL_P012_LE, 0.02},
    {EHAT_PIXEL_P016_LE, 0.02},
  };
  static const int sizes[][2] = { {64, 48}, {7, 5}, {1, 1}, {1, 6}, {33, 2} };
  guint i, s;
  int m, r, site;

  for (i = 0; i < G_N_ELEMENTS (cases); i++)
    for (s = 0; s < G_N_ELEMENTS (sizes); s++)
      for (m = EHAT_MATRIX_BT601; m <= EHAT_MATRIX_BT2020; m++)
        for (r = EHAT_RANGE_LIMITED; r <= EHAT_RANGE_FULL; r++)
          for (site = EHAT_CHROMA_CENTER; site <= EHAT_CHROMA_LEFT; site++) {
            int w = sizes[s][0], h = sizes[s][1];
            EhatColorInfo ci = { m, r, site };
            EhatFrame f;
            float *src = smooth_image (w, h), *back =
                g_new (float, 3 * w * h);
            double err = 0.0, sum = 0.0;
            gsize k, n = (gsize) 3 * w * h;
            GError *e = NULL;

            frame_alloc (&f, cases[i].f, w, h);
            g_assert_true (ehat_frame_write (src, NULL, &ci, &f, &e));
            g_assert_no_error (e);
            g_assert_true (ehat_frame_read (&f, &ci, back, &e));
            g_assert_no_error (e);
            for (k = 0; k < n; k++) {
              double d = fabs (src[k] - back[k]);
              err = MAX (err, d);
              sum += d;
            }
            if (err > cases[i].max_err)
              g_test_message ("%s %dx%d m%d r%d s%d: max %g mean %g",
                  ehat_pixel_format_to_string (cases[i].f), w, h, m, r,
                  site, err, sum / n);
            g_assert_cmpfloat (err, <=, cases[i].max_err);
            g_assert_cmpfloat (sum / n, <=, cases[i].max_err / 3);
            frame_free (&f);
            g_free (src);
            g_free (back);
          }
}

/* Known code values: white, black, red in BT.601/709 limited and full. */
static void
test_yuv_known_values (void)
{
  static const struct
  {
    EhatColorMatrix m;
    EhatColorRange r;
    float rgb[3];
    int y, u, v;
  } cases[] = {
    {EHAT_MATRIX_BT709, EHAT_RANGE_LIMITED, {1, 1, 1}, 235, 128, 128},
    {EHAT_MATRIX_BT709, EHAT_RANGE_LIMITED, {0, 0, 0}, 16, 128, 128},
    {EHAT_MATRIX_BT709, EHAT_RANGE_FULL, {1, 1, 1}, 255, 128, 128},
    {EHAT_MATRIX_BT709, EHAT_RANGE_LIMITED, {1, 0, 0}, 63, 102, 240},
    {EHAT_MATRIX_BT601, EHAT_RANGE_LIMITED, {1, 0, 0}, 81, 90, 240},
    {EHAT_MATRIX_BT601, EHAT_RANGE_FULL, {1, 0, 0}, 76, 85, 255},
    {EHAT_MATRIX_BT2020, EHAT_RANGE_LIMITED, {0, 0, 1}, 29, 240, 119},
  };
  guint i;

  for (i = 0; i < G_N_ELEMENTS (cases); i++) {
    guint8 y[4], u[1], v[1];
    float rgb[12], back[12];
    EhatFrame f = { EHAT_PIXEL_I420, 2, 2, {y, u, v}, {2, 1, 1} };
    EhatColorInfo ci = { cases[i].m, cases[i].r, EHAT_CHROMA_CENTER };
    int k, c;

    for (c = 0; c < 3; c++)
      for (k = 0; k < 4; k++)
        rgb[c * 4 + k] = cases[i].rgb[c];
    g_assert_true (ehat_frame_write (rgb, NULL, &ci, &f, NULL));
    g_assert_cmpint (y[0], ==, cases[i].y);
    g_assert_cmpint (y[3], ==, cases[i].y);
    g_assert_cmpint (u[0], ==, cases[i].u);
    g_assert_cmpint (v[0], ==, cases[i].v);
    g_assert_true (ehat_frame_read (&f, &ci, back, NULL));
    for (k = 0; k < 12; k++)
      g_assert_cmpfloat (fabs (back[k] - rgb[k]), <, 0.01);
  }
}

static void
test_10bit_layout (void)
{
  guint16 y[4], uv[2], y3[4], u3[1], v3[1];
  float white[12];
  EhatColorInfo ci = { EHAT_MATRIX_BT709, EHAT_RANGE_LIMITED,
    EHAT_CHROMA_CENTER
  };
  EhatFrame p010 = { EHAT_PIXEL_P010_10LE, 2, 2, {(guint8 *) y,
          (guint8 *) uv}, {4, 4} };
  EhatFrame i420 = { EHAT_PIXEL_I420_10LE, 2, 2, {(guint8 *) y3,
          (guint8 *) u3, (guint8 *) v3}, {4, 2, 2} };
  int k;

  for (k = 0; k < 12; k++)
    white[k] = 1.0f;
  g_assert_true (ehat_frame_write (white, NULL, &ci, &p010, NULL));
  g_assert_cmpint (GUINT16_FROM_LE (y[0]), ==, 940 << 6);
  g_assert_cmpint (GUINT16_FROM_LE (uv[0]), ==, 512 << 6);
  g_assert_true (ehat_frame_write (white, NULL, &ci, &i420, NULL));
  g_assert_cmpint (GUINT16_FROM_LE (y3[0]), ==, 940);
  g_assert_cmpint (GUINT16_FROM_LE (u3[0]), ==, 512);
  g_assert_cmpint (GUINT16_FROM_LE (v3[0]), ==, 512);
}

/* White and black codes of the deeper layouts: 12 bits in the MSBs of
 * P012, in the LSBs of the _12LE formats, all 16 of P016 / Y444_16LE
 * (limited range: 16·2^(n−8) … 235·2^(n−8), chroma 128·2^(n−8)). */
static void
test_deep_layouts (void)
{
  static const struct
  {
    EhatPixelFormat f;
    int y_white, c_mid, y_black;
  } cases[] = {
    {EHAT_PIXEL_P012_LE, 3760 << 4, 2048 << 4, 256 << 4},
    {EHAT_PIXEL_I422_12LE, 3760, 2048, 256},
    {EHAT_PIXEL_Y444_12LE, 3760, 2048, 256},
    {EHAT_PIXEL_I420_12LE, 3760, 2048, 256},
    {EHAT_PIXEL_Y444_16LE, 60160, 32768, 4096},
    {EHAT_PIXEL_P016_LE, 60160, 32768, 4096},
    {EHAT_PIXEL_I422_10LE, 940, 512, 64},
    {EHAT_PIXEL_Y444_10LE, 940, 512, 64},
  };
  EhatColorInfo ci = { EHAT_MATRIX_BT709, EHAT_RANGE_LIMITED,
    EHAT_CHROMA_CENTER
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
    float img[3 * 4];
    EhatFrame f;

    /* a 4×1 frame: two white pixels, two black */
    for (int c = 0; c < 3; c++)
      for (int k = 0; k < 4; k++)
        img[c * 4 + k] = k < 2 ? 1.0f : 0.0f;
    frame_alloc (&f, cases[i].f, 4, 1);
    g_assert_true (ehat_frame_write (img, NULL, &ci, &f, NULL));
    g_assert_cmpint (GUINT16_FROM_LE (((guint16 *) f.data[0])[0]), ==,
        cases[i].y_white);
    g_assert_cmpint (GUINT16_FROM_LE (((guint16 *) f.data[0])[3]), ==,
        cases[i].y_black);
    g_assert_cmpint (GUINT16_FROM_LE (((guint16 *) f.data[1])[0]), ==,
        cases[i].c_mid);
    g_assert_cmpint (GUINT16_FROM_LE (((guint16 *) f.data[1])[1]), ==,
        cases[i].c_mid);
    frame_free (&f);
  }
}

/* 4:2:2 keeps every chroma row: two rows of different chroma read back
 * each as its own, where 4:2:0 would blend them */
static void
test_422_rows (void)
{
  guint8 y[8], u[4], v[4];
  float rgb[24];
  EhatFrame f = { EHAT_PIXEL_Y42B, 4, 2, {y, u, v}, {4, 2, 2} };
  EhatColorInfo ci = { EHAT_MATRIX_BT709, EHAT_RANGE_FULL,
    EHAT_CHROMA_CENTER
  };

  memset (y, 128, sizeof (y));
  memset (u, 128, sizeof (u));
  v[0] = v[1] = 128;            /* row 0: grey */
  v[2] = v[3] = 180;            /* row 1: redder (in gamut) */
  g_assert_true (ehat_frame_read (&f, &ci, rgb, NULL));
  for (int x = 0; x < 4; x++) {
    g_assert_cmpfloat (fabs (rgb[x] - 128 / 255.0), <, 1e-4);
    g_assert_cmpfloat (rgb[4 + x], >, 0.75);
  }
  /* and writing it back gives the same codes */
  {
    guint8 y2[8], u2[4], v2[4];
    EhatFrame g = { EHAT_PIXEL_Y42B, 4, 2, {y2, u2, v2}, {4, 2, 2} };

    g_assert_true (ehat_frame_write (rgb, NULL, &ci, &g, NULL));
    g_assert_cmpmem (y2, 8, y, 8);
    g_assert_cmpmem (u2, 4, u, 4);
    g_assert_cmpmem (v2, 4, v, 4);
  }
}

static void
test_gray (void)
{
  int r, v;

  for (r = EHAT_RANGE_LIMITED; r <= EHAT_RANGE_FULL; r++) {
    EhatColorInfo ci = { EHAT_MATRIX_BT709, r, EHAT_CHROMA_CENTER };
    guint8 buf[256], out[256];
    float rgb[3 * 256];
    EhatFrame a = { EHAT_PIXEL_GRAY8, 256, 1, {buf}, {256} };
    EhatFrame b = { EHAT_PIXEL_GRAY8, 256, 1, {out}, {256} };

    for (v = 0; v < 256; v++)
      buf[v] = v;
    g_assert_true (ehat_frame_read (&a, &ci, rgb, NULL));
    for (v = 0; v < 256; v++) {
      g_assert_cmpfloat (rgb[v], ==, rgb[256 + v]);
      g_assert_cmpfloat (rgb[v], ==, rgb[512 + v]);
    }
    g_assert_true (ehat_frame_write (rgb, NULL, &ci, &b, NULL));
    /* codes inside the range survive exactly; limited-range codes outside
     * 16..235 clamp */
    for (v = 0; v < 256; v++) {
      int expect = r == EHAT_RANGE_FULL ? v : CLAMP (v, 16, 235);
      g_assert_cmpint (out[v], ==, expect);
    }
  }
}

/* Chroma siting: a single chroma sample step must land where the siting
 * says. */
static void
test_chroma_upsampling (void)
{
  /* 4×2 I420 frame, grey luma, chroma columns 0 and 1 different */
  guint8 y[8], u[2], v[2];
  float rgb[24];
  EhatFrame f = { EHAT_PIXEL_I420, 4, 2, {y, u, v}, {4, 2, 2} };
  EhatColorInfo ci = { EHAT_MATRIX_BT709, EHAT_RANGE_FULL,
    EHAT_CHROMA_CENTER
  };

  memset (y, 128, sizeof (y));
  u[0] = 128;
  u[1] = 128;
  v[0] = 128;
  v[1] = 200;
  g_assert_true (ehat_frame_read (&f, &ci, rgb, NULL));
  /* centred: columns 0 (clamped) equal, 1 = 3/4·c0 + 1/4·c1 */
  g_assert_cmpfloat (fabs (rgb[0] - 128 / 255.0), <, 1e-4);
  g_assert_cmpfloat (rgb[1], >, rgb[0]);
  g_assert_cmpfloat (rgb[2], >, rgb[1]);
  g_assert_cmpfloat (fabs (rgb[3] - rgb[2] - (rgb[2] - rgb[1]) / 2), <,
      1e-5);
  ci.siting = EHAT_CHROMA_LEFT;
  g_assert_true (ehat_frame_read (&f, &ci, rgb, NULL));
  /* left: column 0 exactly sample 0, column 1 the midpoint, column 2
   * exactly sample 1 */
  g_assert_cmpfloat (fabs (rgb[0] - 128 / 255.0), <, 1e-4);
  g_assert_cmpfloat (fabs (rgb[1] - (rgb[0] + rgb[2]) / 2), <, 1e-5);
  g_assert_cmpfloat (rgb[3], ==, rgb[2]);
}

static void
test_alpha_resize (void)
{
  float in[6] = { 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f }, out[6 * 16];
  float ramp[4] = { 0.0f, 1.0f, 0.0f, 1.0f }, rout[16];
  int k;

  ehat_plane_resize_bilinear (in, 3, 2, out, 12, 8);
  for (k = 0; k < 96; k++)
    g_assert_cmpfloat (out[k], ==, 0.5f);
  /* 2×2 → 4×2 of a horizontal step: clamped edges, midpoints between */
  ehat_plane_resize_bilinear (ramp, 2, 2, rout, 4, 2);
  g_assert_cmpfloat (rout[0], ==, 0.0f);
  g_assert_cmpfloat (fabs (rout[1] - 0.25f), <, 1e-6);
  g_assert_cmpfloat (fabs (rout[2] - 0.75f), <, 1e-6);
  g_assert_cmpfloat (rout[3], ==, 1.0f);
}

static void
test_clamp_round (void)
{
  float rgb[3] = { -0.5f, 1.7f, 0.5f / 255.0f + 1e-4f };
  guint8 px[3];
  EhatFrame f = { EHAT_PIXEL_RGB, 1, 1, {px}, {3} };

  g_assert_true (ehat_frame_write (rgb, NULL, NULL, &f, NULL));
  g_assert_cmpint (px[0], ==, 0);
  g_assert_cmpint (px[1], ==, 255);
  g_assert_cmpint (px[2], ==, 1);
}

static void
test_invalid (void)
{
  guint8 buf[16];
  float rgb[48];
  EhatFrame f = { EHAT_PIXEL_RGB, 4, 1, {buf}, {3} };  /* stride too small */
  EhatColorInfo bad = { 17, 0, 0 };
  GError *err = NULL;

  g_assert_false (ehat_frame_read (&f, NULL, rgb, &err));
  g_assert_error (err, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT);
  g_clear_error (&err);
  f.stride[0] = 12;
  f.width = 0;
  g_assert_false (ehat_frame_write (rgb, NULL, NULL, &f, &err));
  g_clear_error (&err);
  f.width = 4;
  f.format = 99;
  g_assert_false (ehat_frame_read (&f, NULL, rgb, &err));
  g_clear_error (&err);
  f.format = EHAT_PIXEL_I420;
  g_assert_false (ehat_frame_read (&f, NULL, rgb, &err));      /* no planes */
  g_clear_error (&err);
  f.format = EHAT_PIXEL_RGB;
  g_assert_false (ehat_frame_read (&f, &bad, rgb, &err));
  g_clear_error (&err);
  g_assert_false (ehat_frame_read (NULL, NULL, rgb, &err));
  g_clear_error (&err);
}

static void
test_format_table (void)
{
  int f;

  for (f = 0; f < EHAT_PIXEL_N_FORMATS; f++) {
    g_assert_nonnull (ehat_pixel_format_to_string (f));
    g_assert_cmpint (ehat_pixel_format_n_planes (f), >=, 1);
    g_assert_true (ehat_pixel_format_depth (f) == 8
        || ehat_pixel_format_depth (f) == 10
        || ehat_pixel_format_depth (f) == 12
        || ehat_pixel_format_depth (f) == 16);
  }
  g_assert_null (ehat_pixel_format_to_string (EHAT_PIXEL_N_FORMATS));
  g_assert_cmpint (ehat_pixel_format_n_planes (EHAT_PIXEL_NV12), ==, 2);
  g_assert_cmpint (ehat_pixel_format_n_planes (EHAT_PIXEL_YV12), ==, 3);
  g_assert_true (ehat_pixel_format_has_alpha (EHAT_PIXEL_ABGR));
  g_assert_false (ehat_pixel_format_has_alpha (EHAT_PIXEL_xBGR));
  g_assert_true (ehat_pixel_format_is_yuv (EHAT_PIXEL_P010_10LE));
  g_assert_cmpint (ehat_pixel_format_n_planes (EHAT_PIXEL_NV16), ==, 2);
  g_assert_cmpint (ehat_pixel_format_depth (EHAT_PIXEL_P012_LE), ==, 12);
  g_assert_cmpint (ehat_pixel_format_depth (EHAT_PIXEL_Y444_16LE), ==, 16);
  {
    int stride, rows;

    /* 4:2:2 halves chroma across, not down; 4:2:0 both */
    g_assert_true (ehat_frame_plane_size (EHAT_PIXEL_I422_10LE, 7, 5, 1,
            &stride, &rows));
    g_assert_cmpint (stride, ==, 8);
    g_assert_cmpint (rows, ==, 5);
    g_assert_true (ehat_frame_plane_size (EHAT_PIXEL_NV16, 7, 5, 1,
            &stride, &rows));
    g_assert_cmpint (stride, ==, 8);
    g_assert_cmpint (rows, ==, 5);
    g_assert_true (ehat_frame_plane_size (EHAT_PIXEL_I420_12LE, 7, 5, 2,
            &stride, &rows));
    g_assert_cmpint (stride, ==, 8);
    g_assert_cmpint (rows, ==, 3);
  }
  g_assert_false (ehat_pixel_format_is_yuv (EHAT_PIXEL_GRAY8));
  g_assert_true (ehat_pixel_format_is_yuv (EHAT_PIXEL_UYVY));
  g_assert_true (ehat_pixel_format_has_alpha (EHAT_PIXEL_VUYA));
  g_assert_false (ehat_pixel_format_has_alpha (EHAT_PIXEL_YUY2));
  {
    int stride, rows;

    /* packed 4:2:2: whole macropixels (an odd width's last one padded) */
    g_assert_true (ehat_frame_plane_size (EHAT_PIXEL_YUY2, 7, 5, 0,
            &stride, &rows));
    g_assert_cmpint (stride, ==, 16);
    g_assert_cmpint (rows, ==, 5);
    g_assert_true (ehat_frame_plane_size (EHAT_PIXEL_Y210, 7, 5, 0,
            &stride, &rows));
    g_assert_cmpint (stride, ==, 32);
    g_assert_true (ehat_frame_plane_size (EHAT_PIXEL_AYUV64, 7, 5, 0,
            &stride, &rows));
    g_assert_cmpint (stride, ==, 56);
    g_assert_false (ehat_frame_plane_size (EHAT_PIXEL_UYVY, 7, 5, 1,
            &stride, &rows));
  }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/frame/format-table", test_format_table);
  g_test_add_func ("/frame/rgb-exact", test_rgb_exact);
  g_test_add_func ("/frame/rgb-channel-order", test_rgb_channel_order);
  g_test_add_func ("/frame/yuv-round-trip", test_yuv_round_trip);
  g_test_add_func ("/frame/yuv-known-values", test_yuv_known_values);
  g_test_add_func ("/frame/10bit-layout", test_10bit_layout);
  g_test_add_func ("/frame/gray", test_gray);
  g_test_add_func ("/frame/planar-rgb", test_planar_rgb);
  g_test_add_func ("/frame/deep-layouts", test_deep_layouts);
  g_test_add_func ("/frame/422-rows", test_422_rows);
  g_test_add_func ("/frame/packed-yuv", test_packed_yuv);
  g_test_add_func ("/frame/swapped-chroma", test_swapped_chroma);
  g_test_add_func ("/frame/chroma-upsampling", test_chroma_upsampling);
  g_test_add_func ("/frame/alpha-resize", test_alpha_resize);
  g_test_add_func ("/frame/clamp-round", test_clamp_round);
  g_test_add_func ("/frame/invalid", test_invalid);
  return g_test_run ();
}
