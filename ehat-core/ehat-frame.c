/* libehat — frame ↔ planar float RGB conversion.  See ehat-frame.h. */
#include "ehat-frame.h"

/* No fused multiply-adds here (libehat is built with -ffp-contract=fast):
 * the conversions must round as the CUDA backend's frame kernels do
 * (ehat-frame-desc.h), on every CPU. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize ("fp-contract=off")
#endif

#include "ehat-frame-desc.h"
#include "ehat.h"

#include <math.h>
#include <string.h>

typedef struct
{
  const char *name;
  EhatFrameKind kind;
  int spp;                      /* samples per pixel in plane 0's rows:
                                 * packed RGB 3 or 4, packed 4:2:2 2 (4 a
                                 * macropixel), packed 4:4:4 4, else 1 */
  int r, g, b;                  /* packed: sample indices in a pixel;
                                 * planar RGB: planes of r, g, b */
  int a;                        /* alpha's sample in a pixel (planar: in
                                 * plane 3, its own), −1: none */
  int y;                        /* packed YUV: luma sample in a pixel */
  int sub_x, sub_y;             /* chroma subsampling shifts (0 or 1) */
  int u_plane, v_plane;         /* planar: planes; semi: 0/1 = U/V first;
                                 * packed YUV: samples in a macropixel */
  int depth;                    /* bits per sample */
  int shift;                    /* 16-bit samples: bits below the value */
  int pack3;                    /* 32-bit words of three 10-bit samples */
  int top;                      /* and the words' top two bits */
} FormatInfo;

/* One row of the table per kind; 16-bit samples are LE words. */
#define PACKED_RGB(n, spp, r, g, b, a, depth) \
  {n, EHAT_FD_PACKED_RGB, spp, r, g, b, a, 0, 0, 0, 0, 0, depth, 0}
#define PLANAR_YUV(n, sub_x, sub_y, u, v, depth) \
  {n, EHAT_FD_PLANAR_YUV, 1, 0, 0, 0, -1, 0, sub_x, sub_y, u, v, depth, 0}
#define SEMI_YUV(n, sub_x, sub_y, u, v, depth, shift) \
  {n, EHAT_FD_SEMI_YUV, 1, 0, 0, 0, -1, 0, sub_x, sub_y, u, v, depth, shift}
#define PACKED_YUV(n, spp, sub_x, y, u, v, a, depth, shift) \
  {n, EHAT_FD_PACKED_YUV, spp, 0, 0, 0, a, y, sub_x, 0, u, v, depth, shift}
#define GRAY(n, depth) \
  {n, EHAT_FD_GRAY, 1, 0, 0, 0, -1, 0, 0, 0, 0, 0, depth, 0}
#define PLANAR_RGB(n, r, g, b, depth) \
  {n, EHAT_FD_PLANAR_RGB, 1, r, g, b, -1, 0, 0, 0, 0, 0, depth, 0}
/* planar with alpha: its plane is the last, plane 3 */
#define PLANAR_YUVA(n, sub_x, sub_y, depth) \
  {n, EHAT_FD_PLANAR_YUV, 1, 0, 0, 0, 0, 0, sub_x, sub_y, 1, 2, depth, 0}
#define PLANAR_RGBA(n, r, g, b, depth) \
  {n, EHAT_FD_PLANAR_RGB, 1, r, g, b, 0, 0, 0, 0, 0, 0, depth, 0}
/* U Y V in that order, three samples to a 32-bit word (v210: 4:2:2, Y0
 * and Y1 alternating with U and V as in UYVY; Y410: 4:4:4) */
#define PACKED_YUV_IN_32(n, spp, sub_x, top) \
  {n, EHAT_FD_PACKED_YUV, spp, 0, 0, 0, -1, 1, sub_x, 0, 0, 2, 10, 0, 1, top}
static const FormatInfo formats[EHAT_PIXEL_N_FORMATS] = {
  [EHAT_PIXEL_RGB] = PACKED_RGB ("RGB", 3, 0, 1, 2, -1, 8),
  [EHAT_PIXEL_BGR] = PACKED_RGB ("BGR", 3, 2, 1, 0, -1, 8),
  [EHAT_PIXEL_RGBA] = PACKED_RGB ("RGBA", 4, 0, 1, 2, 3, 8),
  [EHAT_PIXEL_BGRA] = PACKED_RGB ("BGRA", 4, 2, 1, 0, 3, 8),
  [EHAT_PIXEL_RGBx] = PACKED_RGB ("RGBx", 4, 0, 1, 2, -1, 8),
  [EHAT_PIXEL_BGRx] = PACKED_RGB ("BGRx", 4, 2, 1, 0, -1, 8),
  [EHAT_PIXEL_xRGB] = PACKED_RGB ("xRGB", 4, 1, 2, 3, -1, 8),
  [EHAT_PIXEL_xBGR] = PACKED_RGB ("xBGR", 4, 3, 2, 1, -1, 8),
  [EHAT_PIXEL_ARGB] = PACKED_RGB ("ARGB", 4, 1, 2, 3, 0, 8),
  [EHAT_PIXEL_ABGR] = PACKED_RGB ("ABGR", 4, 3, 2, 1, 0, 8),
  [EHAT_PIXEL_I420] = PLANAR_YUV ("I420", 1, 1, 1, 2, 8),
  [EHAT_PIXEL_YV12] = PLANAR_YUV ("YV12", 1, 1, 2, 1, 8),
  [EHAT_PIXEL_NV12] = SEMI_YUV ("NV12", 1, 1, 0, 1, 8, 0),
  [EHAT_PIXEL_NV21] = SEMI_YUV ("NV21", 1, 1, 1, 0, 8, 0),
  [EHAT_PIXEL_Y444] = PLANAR_YUV ("Y444", 0, 0, 1, 2, 8),
  [EHAT_PIXEL_GRAY8] = GRAY ("GRAY8", 8),
  [EHAT_PIXEL_I420_10LE] = PLANAR_YUV ("I420_10LE", 1, 1, 1, 2, 10),
  [EHAT_PIXEL_P010_10LE] = SEMI_YUV ("P010_10LE", 1, 1, 0, 1, 10, 6),
  [EHAT_PIXEL_Y42B] = PLANAR_YUV ("Y42B", 1, 0, 1, 2, 8),
  [EHAT_PIXEL_NV16] = SEMI_YUV ("NV16", 1, 0, 0, 1, 8, 0),
  [EHAT_PIXEL_I422_10LE] = PLANAR_YUV ("I422_10LE", 1, 0, 1, 2, 10),
  [EHAT_PIXEL_I422_12LE] = PLANAR_YUV ("I422_12LE", 1, 0, 1, 2, 12),
  [EHAT_PIXEL_Y444_10LE] = PLANAR_YUV ("Y444_10LE", 0, 0, 1, 2, 10),
  [EHAT_PIXEL_Y444_12LE] = PLANAR_YUV ("Y444_12LE", 0, 0, 1, 2, 12),
  [EHAT_PIXEL_Y444_16LE] = PLANAR_YUV ("Y444_16LE", 0, 0, 1, 2, 16),
  [EHAT_PIXEL_I420_12LE] = PLANAR_YUV ("I420_12LE", 1, 1, 1, 2, 12),
  [EHAT_PIXEL_P012_LE] = SEMI_YUV ("P012_LE", 1, 1, 0, 1, 12, 4),
  [EHAT_PIXEL_P016_LE] = SEMI_YUV ("P016_LE", 1, 1, 0, 1, 16, 0),
  [EHAT_PIXEL_GRAY16_LE] = GRAY ("GRAY16_LE", 16),
  /* planar RGB: G, B, R planes */
  [EHAT_PIXEL_GBR] = PLANAR_RGB ("GBR", 2, 0, 1, 8),
  [EHAT_PIXEL_GBR_10LE] = PLANAR_RGB ("GBR_10LE", 2, 0, 1, 10),
  [EHAT_PIXEL_GBR_12LE] = PLANAR_RGB ("GBR_12LE", 2, 0, 1, 12),
  /* packed 4:2:2: luma every 2 samples, U and V once a macropixel of 4 */
  [EHAT_PIXEL_YUY2] = PACKED_YUV ("YUY2", 2, 1, 0, 1, 3, -1, 8, 0),
  [EHAT_PIXEL_UYVY] = PACKED_YUV ("UYVY", 2, 1, 1, 0, 2, -1, 8, 0),
  [EHAT_PIXEL_YVYU] = PACKED_YUV ("YVYU", 2, 1, 0, 3, 1, -1, 8, 0),
  [EHAT_PIXEL_Y210] = PACKED_YUV ("Y210", 2, 1, 0, 1, 3, -1, 10, 6),
  [EHAT_PIXEL_Y212_LE] = PACKED_YUV ("Y212_LE", 2, 1, 0, 1, 3, -1, 12, 4),
  /* packed 4:4:4 with alpha */
  [EHAT_PIXEL_AYUV] = PACKED_YUV ("AYUV", 4, 0, 1, 2, 3, 0, 8, 0),
  [EHAT_PIXEL_VUYA] = PACKED_YUV ("VUYA", 4, 0, 2, 1, 0, 3, 8, 0),
  [EHAT_PIXEL_AYUV64] = PACKED_YUV ("AYUV64", 4, 0, 1, 2, 3, 0, 16, 0),
  /* 16-bit packed RGB with alpha */
  [EHAT_PIXEL_RGBA64_LE] = PACKED_RGB ("RGBA64_LE", 4, 0, 1, 2, 3, 16),
  [EHAT_PIXEL_BGRA64_LE] = PACKED_RGB ("BGRA64_LE", 4, 2, 1, 0, 3, 16),
  [EHAT_PIXEL_ARGB64_LE] = PACKED_RGB ("ARGB64_LE", 4, 1, 2, 3, 0, 16),
  [EHAT_PIXEL_ABGR64_LE] = PACKED_RGB ("ABGR64_LE", 4, 3, 2, 1, 0, 16),
  [EHAT_PIXEL_ARGB64] = PACKED_RGB ("ARGB64", 4, 1, 2, 3, 0, 16),
  /* planar with alpha */
  [EHAT_PIXEL_A420] = PLANAR_YUVA ("A420", 1, 1, 8),
  [EHAT_PIXEL_A420_10LE] = PLANAR_YUVA ("A420_10LE", 1, 1, 10),
  [EHAT_PIXEL_A422_10LE] = PLANAR_YUVA ("A422_10LE", 1, 0, 10),
  [EHAT_PIXEL_A444_10LE] = PLANAR_YUVA ("A444_10LE", 0, 0, 10),
  [EHAT_PIXEL_GBRA] = PLANAR_RGBA ("GBRA", 2, 0, 1, 8),
  [EHAT_PIXEL_GBRA_10LE] = PLANAR_RGBA ("GBRA_10LE", 2, 0, 1, 10),
  [EHAT_PIXEL_GBRA_12LE] = PLANAR_RGBA ("GBRA_12LE", 2, 0, 1, 12),
  [EHAT_PIXEL_v210] = PACKED_YUV_IN_32 ("v210", 2, 1, 0),
  [EHAT_PIXEL_NV24] = SEMI_YUV ("NV24", 0, 0, 0, 1, 8, 0),
  [EHAT_PIXEL_NV61] = SEMI_YUV ("NV61", 1, 0, 1, 0, 8, 0),
  [EHAT_PIXEL_VYUY] = PACKED_YUV ("VYUY", 2, 1, 1, 2, 0, -1, 8, 0),
  [EHAT_PIXEL_Y410] = PACKED_YUV_IN_32 ("Y410", 3, 0, 3),
  [EHAT_PIXEL_Y412_LE] = PACKED_YUV ("Y412_LE", 4, 0, 1, 0, 2, -1, 12, 4),
};
#undef PACKED_RGB
#undef PLANAR_YUV
#undef SEMI_YUV
#undef PACKED_YUV
#undef GRAY
#undef PLANAR_RGB
#undef PLANAR_YUVA
#undef PLANAR_RGBA
#undef PACKED_YUV_IN_32

static const FormatInfo *
get_info (EhatPixelFormat format)
{
  if ((int) format < 0 || format >= EHAT_PIXEL_N_FORMATS)
    return NULL;
  return &formats[format];
}

const char *
ehat_pixel_format_to_string (EhatPixelFormat format)
{
  const FormatInfo *fi = get_info (format);
  return fi ? fi->name : NULL;
}

int
ehat_pixel_format_n_planes (EhatPixelFormat format)
{
  const FormatInfo *fi = get_info (format);

  if (!fi)
    return 0;
  switch (fi->kind) {
    case EHAT_FD_PLANAR_YUV:
    case EHAT_FD_PLANAR_RGB:
      return fi->a >= 0 ? 4 : 3;
    case EHAT_FD_SEMI_YUV:
      return 2;
    default:
      return 1;
  }
}

gboolean
ehat_pixel_format_is_yuv (EhatPixelFormat format)
{
  const FormatInfo *fi = get_info (format);
  return fi && (fi->kind == EHAT_FD_PLANAR_YUV || fi->kind == EHAT_FD_SEMI_YUV
      || fi->kind == EHAT_FD_PACKED_YUV);
}

gboolean
ehat_pixel_format_has_alpha (EhatPixelFormat format)
{
  const FormatInfo *fi = get_info (format);
  return fi && fi->a >= 0;
}

int
ehat_pixel_format_depth (EhatPixelFormat format)
{
  const FormatInfo *fi = get_info (format);
  return fi ? fi->depth : 0;
}

gboolean
ehat_frame_plane_size (EhatPixelFormat format, int width, int height,
    int plane, int *min_stride, int *rows)
{
  const FormatInfo *fi = get_info (format);
  int bytes, cw, ch;

  if (!fi || width < 1 || height < 1 || plane < 0
      || plane >= ehat_pixel_format_n_planes (format))
    return FALSE;
  bytes = fi->depth > 8 ? 2 : 1;
  cw = (width + (1 << fi->sub_x) - 1) >> fi->sub_x;
  ch = (height + (1 << fi->sub_y) - 1) >> fi->sub_y;
  if (fi->pack3) {
    /* v210: groups of six pixels in 16 bytes; Y410: a word a pixel */
    *min_stride = fi->sub_x ? (width + 5) / 6 * 16 : width * 4;
    *rows = height;
  } else if (fi->kind == EHAT_FD_PACKED_RGB
      || fi->kind == EHAT_FD_PACKED_YUV) {
    /* whole macropixels */
    *min_stride = cw * (fi->spp << fi->sub_x) * bytes;
    *rows = height;
  } else if (plane == 0 || plane == 3) {
    /* luma, or alpha */
    *min_stride = width * bytes;
    *rows = height;
  } else {
    *min_stride = cw * bytes * (fi->kind == EHAT_FD_SEMI_YUV ? 2 : 1);
    *rows = ch;
  }
  return TRUE;
}

/* The codes of one matrix/range/depth. */
static void
get_coeffs (const EhatColorInfo *color, int depth, EhatFrameDesc *d)
{
  double mul = (double) (1 << (depth - 8));

  switch (color->matrix) {
    case EHAT_MATRIX_BT601:
      d->kr = 0.299;
      d->kb = 0.114;
      break;
    case EHAT_MATRIX_BT2020:
      d->kr = 0.2627;
      d->kb = 0.0593;
      break;
    case EHAT_MATRIX_BT709:
    default:
      d->kr = 0.2126;
      d->kb = 0.0722;
      break;
  }
  d->kg = 1.0 - d->kr - d->kb;
  d->max_code = (1 << depth) - 1;
  if (color->range == EHAT_RANGE_FULL) {
    d->y_off = 0.0;
    d->y_scale = d->max_code;
    d->c_off = 128.0 * mul;
    d->c_scale = d->max_code;
  } else {
    d->y_off = 16.0 * mul;
    d->y_scale = 219.0 * mul;
    d->c_off = 128.0 * mul;
    d->c_scale = 224.0 * mul;
  }
}

static gboolean
check_frame (const EhatFrame *frame, const EhatColorInfo *color,
    const FormatInfo **fi_out, GError **error)
{
  const FormatInfo *fi;
  int p;

  if (!frame || !(fi = get_info (frame->format))) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "frame: NULL frame or unknown pixel format");
    return FALSE;
  }
  if (frame->width < 1 || frame->height < 1) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "frame: invalid size %d×%d", frame->width, frame->height);
    return FALSE;
  }
  if (color && ((int) color->matrix < 0 || color->matrix > EHAT_MATRIX_BT2020
          || (int) color->range < 0 || color->range > EHAT_RANGE_FULL
          || (int) color->siting < 0 || color->siting > EHAT_CHROMA_LEFT)) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "frame: invalid colour description");
    return FALSE;
  }
  for (p = 0; p < ehat_pixel_format_n_planes (frame->format); p++) {
    int min_stride, rows;

    ehat_frame_plane_size (frame->format, frame->width, frame->height, p,
        &min_stride, &rows);
    if (!frame->data[p] || frame->stride[p] < min_stride) {
      g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
          "frame: %s plane %d missing or stride %d < %d", fi->name, p,
          frame->stride[p], min_stride);
      return FALSE;
    }
  }
  *fi_out = fi;
  return TRUE;
}

gboolean
ehat_frame_describe (const EhatFrame *frame, const EhatColorInfo *color,
    EhatFrameDesc *d, GError **error)
{
  EhatColorInfo def = EHAT_COLOR_INFO_INIT;
  const FormatInfo *fi;
  int p;

  if (!color)
    color = &def;
  if (!check_frame (frame, color, &fi, error))
    return FALSE;
  memset (d, 0, sizeof (*d));
  d->kind = fi->kind;
  d->width = frame->width;
  d->height = frame->height;
  d->n_planes = ehat_pixel_format_n_planes (frame->format);
  for (p = 0; p < d->n_planes; p++)
    ehat_frame_plane_size (frame->format, frame->width, frame->height, p,
        &d->row_bytes[p], &d->rows[p]);
  d->spp = fi->spp;
  d->y_idx = fi->y;
  d->r = fi->r;
  d->g = fi->g;
  d->b = fi->b;
  d->a = fi->a;
  d->a_plane = fi->a >= 0 && (fi->kind == EHAT_FD_PLANAR_YUV
      || fi->kind == EHAT_FD_PLANAR_RGB) ? 3 : 0;
  /* the x byte of RGBx & co. is written opaque, and Y412_LE's unused
   * fourth sample */
  d->x = fi->kind == EHAT_FD_PACKED_RGB && fi->spp == 4 && fi->a < 0 ?
      6 - fi->r - fi->g - fi->b : fi->kind == EHAT_FD_PACKED_YUV
      && fi->spp == 4 && fi->a < 0 ? 6 - fi->y - fi->u_plane - fi->v_plane
      : -1;
  d->sub_x = fi->sub_x;
  d->sub_y = fi->sub_y;
  d->cw = (frame->width + (1 << fi->sub_x) - 1) >> fi->sub_x;
  d->ch = (frame->height + (1 << fi->sub_y) - 1) >> fi->sub_y;
  d->c_slots = fi->pack3 && fi->sub_x ? (frame->width + 5) / 6 * 3 : d->cw;
  if (fi->kind == EHAT_FD_SEMI_YUV) {
    d->u_plane = d->v_plane = 1;
    d->c_step = 2;
    d->u_idx = fi->u_plane;
    d->v_idx = fi->v_plane;
  } else if (fi->kind == EHAT_FD_PACKED_YUV) {
    /* chroma once a macropixel, in plane 0 */
    d->u_plane = d->v_plane = 0;
    d->c_step = fi->spp << fi->sub_x;
    d->u_idx = fi->u_plane;
    d->v_idx = fi->v_plane;
  } else {
    d->u_plane = fi->u_plane;
    d->v_plane = fi->v_plane;
    d->c_step = 1;
  }
  d->depth = fi->depth;
  d->shift = fi->shift;
  d->pack3 = fi->pack3;
  d->pack3_top = fi->top;
  d->cosited = color->siting == EHAT_CHROMA_LEFT;
  get_coeffs (color, fi->depth, d);
  return TRUE;
}

static gboolean
read_yuv (const EhatFrame *frame, const EhatFrameDesc *d, float *rgb,
    GError **error)
{
  int w = d->width, h = d->height, cw = d->cw, ch = d->ch;
  gsize plane = (gsize) w * h;
  const guint8 *up = frame->data[d->u_plane], *vp = frame->data[d->v_plane];
  int us = frame->stride[d->u_plane], vs = frame->stride[d->v_plane];
  int x, y;
  float *pb, *pr, *fx, *fy;
  int *x0, *x1, *y0, *y1;

  pb = g_try_new (float, (gsize) cw * ch);
  pr = g_try_new (float, (gsize) cw * ch);
  if (!pb || !pr) {
    g_free (pb);
    g_free (pr);
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY,
        "frame: cannot allocate chroma planes");
    return FALSE;
  }
  for (y = 0; y < ch; y++) {
    const guint8 *ur = up + (gsize) y * us, *vr = vp + (gsize) y * vs;
    for (x = 0; x < cw; x++) {
      pb[(gsize) y * cw + x] =
          ehat_fd_chroma (d, ehat_fd_get (d, ur, x * d->c_step + d->u_idx));
      pr[(gsize) y * cw + x] =
          ehat_fd_chroma (d, ehat_fd_get (d, vr, x * d->c_step + d->v_idx));
    }
  }

  x0 = g_new (int, w);
  x1 = g_new (int, w);
  fx = g_new (float, w);
  y0 = g_new (int, h);
  y1 = g_new (int, h);
  fy = g_new (float, h);
  for (x = 0; x < w; x++)
    ehat_fd_taps (x, cw, d->sub_x, d->cosited, &x0[x], &x1[x], &fx[x]);
  for (y = 0; y < h; y++)
    ehat_fd_taps (y, ch, d->sub_y, FALSE, &y0[y], &y1[y], &fy[y]);

  for (y = 0; y < h; y++) {
    const guint8 *yr = frame->data[0] + (gsize) y * frame->stride[0];
    const float *b0 = pb + (gsize) y0[y] * cw, *b1 = pb + (gsize) y1[y] * cw;
    const float *r0 = pr + (gsize) y0[y] * cw, *r1 = pr + (gsize) y1[y] * cw;

    for (x = 0; x < w; x++) {
      float bt[2] = { b0[x0[x]], b0[x1[x]] }, bb[2] = { b1[x0[x]], b1[x1[x]] };
      float rt[2] = { r0[x0[x]], r0[x1[x]] }, rb[2] = { r1[x0[x]], r1[x1[x]] };
      float px[3];
      gsize o = (gsize) y * w + x;

      ehat_fd_yuv_to_rgb (d, ehat_fd_get (d, yr, ehat_fd_luma_index (d, x)),
          bt, bb, rt, rb, fx[x], fy[y], px);
      rgb[o] = px[0];
      rgb[plane + o] = px[1];
      rgb[2 * plane + o] = px[2];
    }
  }

  g_free (pb);
  g_free (pr);
  g_free (x0);
  g_free (x1);
  g_free (fx);
  g_free (y0);
  g_free (y1);
  g_free (fy);
  return TRUE;
}

gboolean
ehat_frame_read (const EhatFrame *frame, const EhatColorInfo *color,
    float *rgb, GError **error)
{
  EhatFrameDesc d;
  int w, h, x, y;
  gsize plane;

  if (!ehat_frame_describe (frame, color, &d, error))
    return FALSE;
  if (!rgb) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "frame: NULL output");
    return FALSE;
  }
  w = frame->width;
  h = frame->height;
  plane = (gsize) w * h;

  switch (d.kind) {
    case EHAT_FD_PACKED_RGB:
      for (y = 0; y < h; y++) {
        const guint8 *row = frame->data[0] + (gsize) y * frame->stride[0];
        for (x = 0; x < w; x++) {
          int i = x * d.spp;
          gsize o = (gsize) y * w + x;
          rgb[o] = ehat_fd_rgb_value (&d, ehat_fd_get (&d, row, i + d.r));
          rgb[plane + o] = ehat_fd_rgb_value (&d, ehat_fd_get (&d, row,
                  i + d.g));
          rgb[2 * plane + o] = ehat_fd_rgb_value (&d, ehat_fd_get (&d, row,
                  i + d.b));
        }
      }
      return TRUE;
    case EHAT_FD_GRAY:
      for (y = 0; y < h; y++) {
        const guint8 *row = frame->data[0] + (gsize) y * frame->stride[0];
        for (x = 0; x < w; x++) {
          gsize o = (gsize) y * w + x;
          float v = ehat_fd_gray_to_rgb (&d, ehat_fd_get (&d, row, x));
          rgb[o] = rgb[plane + o] = rgb[2 * plane + o] = v;
        }
      }
      return TRUE;
    case EHAT_FD_PLANAR_RGB:
      for (int c = 0; c < 3; c++) {
        int p = c == 0 ? d.r : c == 1 ? d.g : d.b;

        for (y = 0; y < h; y++) {
          const guint8 *row = frame->data[p] + (gsize) y * frame->stride[p];
          float *dst = rgb + c * plane + (gsize) y * w;

          for (x = 0; x < w; x++)
            dst[x] = ehat_fd_rgb_value (&d, ehat_fd_get (&d, row, x));
        }
      }
      return TRUE;
    default:
      return read_yuv (frame, &d, rgb, error);
  }
}

gboolean
ehat_frame_read_alpha (const EhatFrame *frame, float *alpha, GError **error)
{
  EhatFrameDesc d;
  int x, y;

  if (!ehat_frame_describe (frame, NULL, &d, error))
    return FALSE;
  if (!alpha || d.a < 0) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "frame: %s has no alpha (or NULL output)",
        ehat_pixel_format_to_string (frame->format));
    return FALSE;
  }
  for (y = 0; y < frame->height; y++) {
    const guint8 *row = frame->data[d.a_plane]
        + (gsize) y * frame->stride[d.a_plane];
    for (x = 0; x < frame->width; x++)
      alpha[(gsize) y * frame->width + x] = ehat_fd_alpha (&d, row, x);
  }
  return TRUE;
}

/* The alpha code of pixel o: the given alpha's, else opaque (as the x
 * byte of RGBx & co.). */
static inline int
alpha_code (const EhatFrameDesc *d, const float *alpha, gsize o)
{
  return alpha ? ehat_fd_rgb_code (d, alpha[o]) : d->max_code;
}

static void
write_yuv (const float *rgb, const float *alpha, const EhatFrameDesc *d,
    EhatFrame *frame)
{
  int w = d->width, h = d->height, slots = ehat_fd_luma_slots (d);
  gsize plane = (gsize) w * h;
  guint8 *up = frame->data[d->u_plane], *vp = frame->data[d->v_plane];
  int us = frame->stride[d->u_plane], vs = frame->stride[d->v_plane];
  int x, y;

  for (y = 0; y < h; y++) {
    guint8 *yr = frame->data[0] + (gsize) y * frame->stride[0];
    guint8 *ar = frame->data[d->a_plane]
        + (gsize) y * frame->stride[d->a_plane];
    for (x = 0; x < slots; x++) {
      gsize o = (gsize) y * w + MIN (x, w - 1);
      ehat_fd_put (d, yr, ehat_fd_luma_index (d, x), ehat_fd_luma_code (d,
              rgb[o], rgb[plane + o], rgb[2 * plane + o]));
      if (d->a >= 0)
        ehat_fd_put (d, ar, x * d->spp + d->a, alpha_code (d, alpha, o));
      else if (d->x >= 0)
        ehat_fd_put (d, yr, x * d->spp + d->x, d->max_code);
    }
  }

  for (y = 0; y < d->ch; y++) {
    guint8 *ur = up + (gsize) y * us, *vr = vp + (gsize) y * vs;
    /* v210: also the chroma of the last group's padding (taps clamped
     * to the frame) */
    for (x = 0; x < d->c_slots; x++) {
      double sb = 0.0, sr = 0.0, sw = 0.0, yy, cb, cr;
      int u, v, t;

      if (!d->sub_x && !d->sub_y) {
        gsize o = (gsize) y * w + x;
        ehat_fd_ypbpr (d, rgb[o], rgb[plane + o], rgb[2 * plane + o], &yy,
            &sb, &sr);
        sw = 1.0;
      } else {
        for (t = 0; t < EHAT_FD_N_TAPS; t++) {
          int sx, sy;
          double wt = ehat_fd_chroma_tap (d, x, y, t, &sx, &sy);
          gsize o;

          if (wt == 0.0)
            continue;
          o = (gsize) sy * w + sx;
          ehat_fd_ypbpr (d, rgb[o], rgb[plane + o], rgb[2 * plane + o], &yy,
              &cb, &cr);
          sb += wt * cb;
          sr += wt * cr;
          sw += wt;
        }
      }
      ehat_fd_chroma_codes (d, sb, sr, sw, &u, &v);
      ehat_fd_put (d, ur, x * d->c_step + d->u_idx, u);
      ehat_fd_put (d, vr, x * d->c_step + d->v_idx, v);
    }
  }
}

gboolean
ehat_frame_write (const float *rgb, const float *alpha,
    const EhatColorInfo *color, EhatFrame *frame, GError **error)
{
  EhatFrameDesc d;
  int w, h, x, y;
  gsize plane;

  if (!ehat_frame_describe (frame, color, &d, error))
    return FALSE;
  if (!rgb) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "frame: NULL input");
    return FALSE;
  }
  w = frame->width;
  h = frame->height;
  plane = (gsize) w * h;

  switch (d.kind) {
    case EHAT_FD_PACKED_RGB:
      for (y = 0; y < h; y++) {
        guint8 *row = frame->data[0] + (gsize) y * frame->stride[0];
        for (x = 0; x < w; x++) {
          int i = x * d.spp;
          gsize o = (gsize) y * w + x;
          ehat_fd_put (&d, row, i + d.r, ehat_fd_rgb_code (&d, rgb[o]));
          ehat_fd_put (&d, row, i + d.g, ehat_fd_rgb_code (&d,
                  rgb[plane + o]));
          ehat_fd_put (&d, row, i + d.b, ehat_fd_rgb_code (&d,
                  rgb[2 * plane + o]));
          /* alpha as given, else opaque, as is the x byte of RGBx */
          if (d.a >= 0)
            ehat_fd_put (&d, row, i + d.a, alpha_code (&d, alpha, o));
          else if (d.x >= 0)
            ehat_fd_put (&d, row, i + d.x, d.max_code);
        }
      }
      return TRUE;
    case EHAT_FD_GRAY:
      for (y = 0; y < h; y++) {
        guint8 *row = frame->data[0] + (gsize) y * frame->stride[0];
        for (x = 0; x < w; x++) {
          gsize o = (gsize) y * w + x;
          ehat_fd_put (&d, row, x, ehat_fd_luma_code (&d, rgb[o],
                  rgb[plane + o], rgb[2 * plane + o]));
        }
      }
      return TRUE;
    case EHAT_FD_PLANAR_RGB:
      for (int c = 0; c < 3; c++) {
        int p = c == 0 ? d.r : c == 1 ? d.g : d.b;

        for (y = 0; y < h; y++) {
          guint8 *row = frame->data[p] + (gsize) y * frame->stride[p];
          const float *src = rgb + c * plane + (gsize) y * w;

          for (x = 0; x < w; x++)
            ehat_fd_put (&d, row, x, ehat_fd_rgb_code (&d, src[x]));
        }
      }
      if (d.a >= 0)
        for (y = 0; y < h; y++) {
          guint8 *row = frame->data[d.a_plane]
              + (gsize) y * frame->stride[d.a_plane];

          for (x = 0; x < w; x++)
            ehat_fd_put (&d, row, x, alpha_code (&d, alpha,
                    (gsize) y * w + x));
        }
      return TRUE;
    default:
      write_yuv (rgb, alpha, &d, frame);
      return TRUE;
  }
}

void
ehat_plane_resize_bilinear (const float *in, int width, int height,
    float *out, int out_width, int out_height)
{
  double sx, sy;
  int x, y;

  if (!in || !out || width < 1 || height < 1 || out_width < 1
      || out_height < 1)
    return;
  sx = (double) width / out_width;
  sy = (double) height / out_height;
  for (y = 0; y < out_height; y++) {
    int y0, y1;
    float fy;
    const float *r0, *r1;

    ehat_fd_resize_taps (y, sy, height, &y0, &y1, &fy);
    r0 = in + (gsize) y0 * width;
    r1 = in + (gsize) y1 * width;
    for (x = 0; x < out_width; x++) {
      int x0, x1;
      float fx;

      ehat_fd_resize_taps (x, sx, width, &x0, &x1, &fx);
      out[(gsize) y * out_width + x] =
          ehat_fd_lerp2 (r0[x0], r0[x1], r1[x0], r1[x1], fx, fy);
    }
  }
}
