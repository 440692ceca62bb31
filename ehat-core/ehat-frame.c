/* libehat — frame ↔ planar float RGB conversion.  See ehat-frame.h. */
#include "ehat-frame.h"
#include "ehat.h"

#include <math.h>
#include <string.h>

typedef enum
{
  KIND_PACKED_RGB,
  KIND_PLANAR_YUV,              /* Y, U, V planes (order in u_plane/v_plane) */
  KIND_SEMI_YUV,                /* Y, interleaved chroma */
  KIND_GRAY,
} FormatKind;

typedef struct
{
  const char *name;
  FormatKind kind;
  int bpp;                      /* packed: bytes per pixel */
  int r, g, b, a;               /* packed: byte offsets, a = −1: none */
  int sub;                      /* chroma subsampling shift (both axes) */
  int u_plane, v_plane;         /* planar: planes; semi: 0/1 = U/V first */
  int depth;                    /* bits per sample */
  int shift;                    /* 16-bit samples: bits below the value */
} FormatInfo;

static const FormatInfo formats[EHAT_PIXEL_N_FORMATS] = {
  [EHAT_PIXEL_RGB] = {"RGB", KIND_PACKED_RGB, 3, 0, 1, 2, -1, 0, 0, 0, 8, 0},
  [EHAT_PIXEL_BGR] = {"BGR", KIND_PACKED_RGB, 3, 2, 1, 0, -1, 0, 0, 0, 8, 0},
  [EHAT_PIXEL_RGBA] = {"RGBA", KIND_PACKED_RGB, 4, 0, 1, 2, 3, 0, 0, 0, 8, 0},
  [EHAT_PIXEL_BGRA] = {"BGRA", KIND_PACKED_RGB, 4, 2, 1, 0, 3, 0, 0, 0, 8, 0},
  [EHAT_PIXEL_RGBx] = {"RGBx", KIND_PACKED_RGB, 4, 0, 1, 2, -1, 0, 0, 0, 8, 0},
  [EHAT_PIXEL_BGRx] = {"BGRx", KIND_PACKED_RGB, 4, 2, 1, 0, -1, 0, 0, 0, 8, 0},
  [EHAT_PIXEL_xRGB] = {"xRGB", KIND_PACKED_RGB, 4, 1, 2, 3, -1, 0, 0, 0, 8, 0},
  [EHAT_PIXEL_xBGR] = {"xBGR", KIND_PACKED_RGB, 4, 3, 2, 1, -1, 0, 0, 0, 8, 0},
  [EHAT_PIXEL_ARGB] = {"ARGB", KIND_PACKED_RGB, 4, 1, 2, 3, 0, 0, 0, 0, 8, 0},
  [EHAT_PIXEL_ABGR] = {"ABGR", KIND_PACKED_RGB, 4, 3, 2, 1, 0, 0, 0, 0, 8, 0},
  [EHAT_PIXEL_I420] = {"I420", KIND_PLANAR_YUV, 1, 0, 0, 0, -1, 1, 1, 2, 8, 0},
  [EHAT_PIXEL_YV12] = {"YV12", KIND_PLANAR_YUV, 1, 0, 0, 0, -1, 1, 2, 1, 8, 0},
  [EHAT_PIXEL_NV12] = {"NV12", KIND_SEMI_YUV, 1, 0, 0, 0, -1, 1, 0, 1, 8, 0},
  [EHAT_PIXEL_NV21] = {"NV21", KIND_SEMI_YUV, 1, 0, 0, 0, -1, 1, 1, 0, 8, 0},
  [EHAT_PIXEL_Y444] = {"Y444", KIND_PLANAR_YUV, 1, 0, 0, 0, -1, 0, 1, 2, 8, 0},
  [EHAT_PIXEL_GRAY8] = {"GRAY8", KIND_GRAY, 1, 0, 0, 0, -1, 0, 0, 0, 8, 0},
  [EHAT_PIXEL_I420_10LE] = {"I420_10LE", KIND_PLANAR_YUV, 2, 0, 0, 0, -1, 1,
      1, 2, 10, 0},
  [EHAT_PIXEL_P010_10LE] = {"P010_10LE", KIND_SEMI_YUV, 2, 0, 0, 0, -1, 1,
      0, 1, 10, 6},
};

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
    case KIND_PLANAR_YUV:
      return 3;
    case KIND_SEMI_YUV:
      return 2;
    default:
      return 1;
  }
}

gboolean
ehat_pixel_format_is_yuv (EhatPixelFormat format)
{
  const FormatInfo *fi = get_info (format);
  return fi && (fi->kind == KIND_PLANAR_YUV || fi->kind == KIND_SEMI_YUV);
}

gboolean
ehat_pixel_format_has_alpha (EhatPixelFormat format)
{
  const FormatInfo *fi = get_info (format);
  return fi && fi->kind == KIND_PACKED_RGB && fi->a >= 0;
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
  cw = (width + (1 << fi->sub) - 1) >> fi->sub;
  ch = (height + (1 << fi->sub) - 1) >> fi->sub;
  if (fi->kind == KIND_PACKED_RGB) {
    *min_stride = width * fi->bpp;
    *rows = height;
  } else if (plane == 0) {
    *min_stride = width * bytes;
    *rows = height;
  } else {
    *min_stride = cw * bytes * (fi->kind == KIND_SEMI_YUV ? 2 : 1);
    *rows = ch;
  }
  return TRUE;
}

/* Y'CbCr coefficients and the code mapping of one matrix/range/depth. */
typedef struct
{
  double kr, kg, kb;
  double y_off, y_scale, c_off, c_scale;
  int max_code;
} Coeffs;

static void
get_coeffs (const EhatColorInfo *color, int depth, Coeffs *k)
{
  double mul = (double) (1 << (depth - 8));

  switch (color->matrix) {
    case EHAT_MATRIX_BT601:
      k->kr = 0.299;
      k->kb = 0.114;
      break;
    case EHAT_MATRIX_BT2020:
      k->kr = 0.2627;
      k->kb = 0.0593;
      break;
    case EHAT_MATRIX_BT709:
    default:
      k->kr = 0.2126;
      k->kb = 0.0722;
      break;
  }
  k->kg = 1.0 - k->kr - k->kb;
  k->max_code = (1 << depth) - 1;
  if (color->range == EHAT_RANGE_FULL) {
    k->y_off = 0.0;
    k->y_scale = k->max_code;
    k->c_off = 128.0 * mul;
    k->c_scale = k->max_code;
  } else {
    k->y_off = 16.0 * mul;
    k->y_scale = 219.0 * mul;
    k->c_off = 128.0 * mul;
    k->c_scale = 224.0 * mul;
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

static inline int
get_sample (const guint8 *row, int i, const FormatInfo *fi)
{
  if (fi->depth > 8) {
    guint16 v;
    memcpy (&v, row + 2 * i, 2);
    return (GUINT16_FROM_LE (v) >> fi->shift) & ((1 << fi->depth) - 1);
  }
  return row[i];
}

static inline void
put_sample (guint8 *row, int i, int code, const FormatInfo *fi)
{
  if (fi->depth > 8) {
    guint16 v = GUINT16_TO_LE ((guint16) (code << fi->shift));
    memcpy (row + 2 * i, &v, 2);
  } else {
    row[i] = (guint8) code;
  }
}

static inline int
to_code (double v, int max_code)
{
  long c;

  if (!(v > 0.0))               /* NaN and negatives */
    return 0;
  if (v >= max_code)
    return max_code;
  c = lrint (floor (v + 0.5));
  return (int) c;
}

static inline float
clamp01 (double v)
{
  return (float) (v < 0.0 ? 0.0 : v > 1.0 ? 1.0 : v);
}

/* Chroma plane pointers and the sample step inside a row (2 for
 * interleaved chroma). */
static void
chroma_planes (const EhatFrame *frame, const FormatInfo *fi, guint8 **u,
    guint8 **v, int *u_step, int *u_idx, int *v_idx, int *u_stride,
    int *v_stride)
{
  if (fi->kind == KIND_SEMI_YUV) {
    *u = *v = frame->data[1];
    *u_stride = *v_stride = frame->stride[1];
    *u_step = 2;
    *u_idx = fi->u_plane;
    *v_idx = fi->v_plane;
  } else {
    *u = frame->data[fi->u_plane];
    *v = frame->data[fi->v_plane];
    *u_stride = frame->stride[fi->u_plane];
    *v_stride = frame->stride[fi->v_plane];
    *u_step = 1;
    *u_idx = *v_idx = 0;
  }
}

/* Bilinear taps from full-resolution position i to the subsampled grid:
 * centred chroma sits at 2j + 0.5, left-sited (horizontal only) at 2j. */
static void
chroma_taps (int n, int cn, int sub, gboolean cosited, int *i0, int *i1,
    float *f)
{
  int i;

  for (i = 0; i < n; i++) {
    double c, fl;

    if (!sub)
      c = i;
    else if (cosited)
      c = i / 2.0;
    else
      c = (i + 0.5) / 2.0 - 0.5;
    fl = floor (c);
    i0[i] = CLAMP ((int) fl, 0, cn - 1);
    i1[i] = CLAMP ((int) fl + 1, 0, cn - 1);
    f[i] = (float) (c - fl);
  }
}

static gboolean
read_yuv (const EhatFrame *frame, const FormatInfo *fi,
    const EhatColorInfo *color, float *rgb, GError **error)
{
  int w = frame->width, h = frame->height;
  int cw = (w + (1 << fi->sub) - 1) >> fi->sub;
  int ch = (h + (1 << fi->sub) - 1) >> fi->sub;
  gsize plane = (gsize) w * h;
  guint8 *up, *vp;
  int step, ui, vi, us, vs, x, y;
  float *pb, *pr, *fx, *fy;
  int *x0, *x1, *y0, *y1;
  Coeffs k;

  get_coeffs (color, fi->depth, &k);
  pb = g_try_new (float, (gsize) cw * ch);
  pr = g_try_new (float, (gsize) cw * ch);
  if (!pb || !pr) {
    g_free (pb);
    g_free (pr);
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_OUT_OF_MEMORY,
        "frame: cannot allocate chroma planes");
    return FALSE;
  }
  chroma_planes (frame, fi, &up, &vp, &step, &ui, &vi, &us, &vs);
  for (y = 0; y < ch; y++) {
    const guint8 *ur = up + (gsize) y * us, *vr = vp + (gsize) y * vs;
    for (x = 0; x < cw; x++) {
      pb[(gsize) y * cw + x] =
          (float) ((get_sample (ur, x * step + ui, fi) - k.c_off) / k.c_scale);
      pr[(gsize) y * cw + x] =
          (float) ((get_sample (vr, x * step + vi, fi) - k.c_off) / k.c_scale);
    }
  }

  x0 = g_new (int, w);
  x1 = g_new (int, w);
  fx = g_new (float, w);
  y0 = g_new (int, h);
  y1 = g_new (int, h);
  fy = g_new (float, h);
  chroma_taps (w, cw, fi->sub, color->siting == EHAT_CHROMA_LEFT, x0, x1, fx);
  chroma_taps (h, ch, fi->sub, FALSE, y0, y1, fy);

  for (y = 0; y < h; y++) {
    const guint8 *yr = frame->data[0] + (gsize) y * frame->stride[0];
    const float *b0 = pb + (gsize) y0[y] * cw, *b1 = pb + (gsize) y1[y] * cw;
    const float *r0 = pr + (gsize) y0[y] * cw, *r1 = pr + (gsize) y1[y] * cw;
    float wy = fy[y];

    for (x = 0; x < w; x++) {
      double yy = (get_sample (yr, x, fi) - k.y_off) / k.y_scale;
      float wx = fx[x];
      double cb = (1 - wy) * ((1 - wx) * b0[x0[x]] + wx * b0[x1[x]])
          + wy * ((1 - wx) * b1[x0[x]] + wx * b1[x1[x]]);
      double cr = (1 - wy) * ((1 - wx) * r0[x0[x]] + wx * r0[x1[x]])
          + wy * ((1 - wx) * r1[x0[x]] + wx * r1[x1[x]]);
      double r = yy + 2.0 * (1.0 - k.kr) * cr;
      double b = yy + 2.0 * (1.0 - k.kb) * cb;
      double g = (yy - k.kr * r - k.kb * b) / k.kg;
      gsize o = (gsize) y * w + x;

      rgb[o] = clamp01 (r);
      rgb[plane + o] = clamp01 (g);
      rgb[2 * plane + o] = clamp01 (b);
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
  EhatColorInfo def = EHAT_COLOR_INFO_INIT;
  const FormatInfo *fi;
  int w, h, x, y;
  gsize plane;

  if (!color)
    color = &def;
  if (!check_frame (frame, color, &fi, error))
    return FALSE;
  if (!rgb) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "frame: NULL output");
    return FALSE;
  }
  w = frame->width;
  h = frame->height;
  plane = (gsize) w * h;

  switch (fi->kind) {
    case KIND_PACKED_RGB:
      for (y = 0; y < h; y++) {
        const guint8 *row = frame->data[0] + (gsize) y * frame->stride[0];
        for (x = 0; x < w; x++) {
          const guint8 *px = row + x * fi->bpp;
          gsize o = (gsize) y * w + x;
          rgb[o] = px[fi->r] / 255.0f;
          rgb[plane + o] = px[fi->g] / 255.0f;
          rgb[2 * plane + o] = px[fi->b] / 255.0f;
        }
      }
      return TRUE;
    case KIND_GRAY:{
      Coeffs k;
      get_coeffs (color, fi->depth, &k);
      for (y = 0; y < h; y++) {
        const guint8 *row = frame->data[0] + (gsize) y * frame->stride[0];
        for (x = 0; x < w; x++) {
          gsize o = (gsize) y * w + x;
          float v = clamp01 ((get_sample (row, x, fi) - k.y_off) / k.y_scale);
          rgb[o] = rgb[plane + o] = rgb[2 * plane + o] = v;
        }
      }
      return TRUE;
    }
    default:
      return read_yuv (frame, fi, color, rgb, error);
  }
}

gboolean
ehat_frame_read_alpha (const EhatFrame *frame, float *alpha, GError **error)
{
  const FormatInfo *fi;
  int x, y;

  if (!check_frame (frame, NULL, &fi, error))
    return FALSE;
  if (!alpha || fi->kind != KIND_PACKED_RGB || fi->a < 0) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "frame: %s has no alpha (or NULL output)", fi->name);
    return FALSE;
  }
  for (y = 0; y < frame->height; y++) {
    const guint8 *row = frame->data[0] + (gsize) y * frame->stride[0];
    for (x = 0; x < frame->width; x++)
      alpha[(gsize) y * frame->width + x] = row[x * fi->bpp + fi->a] / 255.0f;
  }
  return TRUE;
}

/* Y' and the two colour differences of one (clamped) RGB pixel. */
static inline void
rgb_to_ypbpr (const Coeffs * k, float r, float g, float b, double *yy,
    double *cb, double *cr)
{
  double rr = clamp01 (r), gg = clamp01 (g), bb = clamp01 (b);
  double l = k->kr * rr + k->kg * gg + k->kb * bb;

  *yy = l;
  if (cb)
    *cb = (bb - l) / (2.0 * (1.0 - k->kb));
  if (cr)
    *cr = (rr - l) / (2.0 * (1.0 - k->kr));
}

static void
write_yuv (const float *rgb, const FormatInfo *fi, const EhatColorInfo *color,
    EhatFrame *frame)
{
  int w = frame->width, h = frame->height;
  int cw = (w + (1 << fi->sub) - 1) >> fi->sub;
  int ch = (h + (1 << fi->sub) - 1) >> fi->sub;
  gsize plane = (gsize) w * h;
  guint8 *up, *vp;
  int step, ui, vi, us, vs, x, y;
  Coeffs k;

  get_coeffs (color, fi->depth, &k);
  for (y = 0; y < h; y++) {
    guint8 *yr = frame->data[0] + (gsize) y * frame->stride[0];
    for (x = 0; x < w; x++) {
      gsize o = (gsize) y * w + x;
      double yy;
      rgb_to_ypbpr (&k, rgb[o], rgb[plane + o], rgb[2 * plane + o], &yy, NULL,
          NULL);
      put_sample (yr, x, to_code (k.y_off + k.y_scale * yy, k.max_code), fi);
    }
  }

  chroma_planes (frame, fi, &up, &vp, &step, &ui, &vi, &us, &vs);
  for (y = 0; y < ch; y++) {
    guint8 *ur = up + (gsize) y * us, *vr = vp + (gsize) y * vs;
    for (x = 0; x < cw; x++) {
      double sb = 0.0, sr = 0.0, sw = 0.0;
      int dy, dx;

      if (!fi->sub) {
        gsize o = (gsize) y * w + x;
        double yy;
        rgb_to_ypbpr (&k, rgb[o], rgb[plane + o], rgb[2 * plane + o], &yy,
            &sb, &sr);
        sw = 1.0;
      } else {
        /* 2×2 box for centred chroma; [1 2 1]/4 × [1 1]/2 around the
         * co-sited column for left siting.  Taps past the edge repeat the
         * last row/column, as odd sizes need. */
        gboolean left = color->siting == EHAT_CHROMA_LEFT;
        for (dy = 0; dy < 2; dy++) {
          int sy = MIN (2 * y + dy, h - 1);
          for (dx = left ? -1 : 0; dx < 2; dx++) {
            int sx = CLAMP (2 * x + dx, 0, w - 1);
            double wt = left ? (dx == 0 ? 0.5 : 0.25) : 0.5;
            gsize o = (gsize) sy * w + sx;
            double yy, cb, cr;

            rgb_to_ypbpr (&k, rgb[o], rgb[plane + o], rgb[2 * plane + o],
                &yy, &cb, &cr);
            sb += wt * cb;
            sr += wt * cr;
            sw += wt;
          }
        }
      }
      put_sample (ur, x * step + ui,
          to_code (k.c_off + k.c_scale * sb / sw, k.max_code), fi);
      put_sample (vr, x * step + vi,
          to_code (k.c_off + k.c_scale * sr / sw, k.max_code), fi);
    }
  }
}

gboolean
ehat_frame_write (const float *rgb, const float *alpha,
    const EhatColorInfo *color, EhatFrame *frame, GError **error)
{
  EhatColorInfo def = EHAT_COLOR_INFO_INIT;
  const FormatInfo *fi;
  int w, h, x, y;
  gsize plane;

  if (!color)
    color = &def;
  if (!check_frame (frame, color, &fi, error))
    return FALSE;
  if (!rgb) {
    g_set_error (error, EHAT_ERROR, EHAT_ERROR_INVALID_ARGUMENT,
        "frame: NULL input");
    return FALSE;
  }
  w = frame->width;
  h = frame->height;
  plane = (gsize) w * h;

  switch (fi->kind) {
    case KIND_PACKED_RGB:
      for (y = 0; y < h; y++) {
        guint8 *row = frame->data[0] + (gsize) y * frame->stride[0];
        for (x = 0; x < w; x++) {
          guint8 *px = row + x * fi->bpp;
          gsize o = (gsize) y * w + x;
          px[fi->r] = to_code (rgb[o] * 255.0, 255);
          px[fi->g] = to_code (rgb[plane + o] * 255.0, 255);
          px[fi->b] = to_code (rgb[2 * plane + o] * 255.0, 255);
          if (fi->bpp == 4) {
            /* the x byte of RGBx & co. is written opaque as well */
            int a = fi->a >= 0 ? fi->a : 6 - fi->r - fi->g - fi->b;
            px[a] = alpha && fi->a >= 0 ? to_code (alpha[o] * 255.0, 255)
                : 255;
          }
        }
      }
      return TRUE;
    case KIND_GRAY:{
      Coeffs k;
      get_coeffs (color, fi->depth, &k);
      for (y = 0; y < h; y++) {
        guint8 *row = frame->data[0] + (gsize) y * frame->stride[0];
        for (x = 0; x < w; x++) {
          gsize o = (gsize) y * w + x;
          double yy;
          rgb_to_ypbpr (&k, rgb[o], rgb[plane + o], rgb[2 * plane + o], &yy,
              NULL, NULL);
          put_sample (row, x, to_code (k.y_off + k.y_scale * yy, k.max_code),
              fi);
        }
      }
      return TRUE;
    }
    default:
      write_yuv (rgb, fi, color, frame);
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
    double cy = CLAMP ((y + 0.5) * sy - 0.5, 0.0, height - 1.0);
    int y0 = (int) cy, y1 = MIN (y0 + 1, height - 1);
    float fy = (float) (cy - y0);
    const float *r0 = in + (gsize) y0 * width, *r1 = in + (gsize) y1 * width;

    for (x = 0; x < out_width; x++) {
      double cx = CLAMP ((x + 0.5) * sx - 0.5, 0.0, width - 1.0);
      int x0 = (int) cx, x1 = MIN (x0 + 1, width - 1);
      float fx = (float) (cx - x0);

      out[(gsize) y * out_width + x] =
          (1 - fy) * ((1 - fx) * r0[x0] + fx * r0[x1])
          + fy * ((1 - fx) * r1[x0] + fx * r1[x1]);
    }
  }
}
