/* libehat (internal) — a video frame's layout and colour maths, resolved
 * once per frame for a converter: the host code of ehat-frame.c and the
 * device kernels of a backend (kernels/ehat-cuda-frame.cu).
 *
 * Both convert with the functions below, compiled from this one header,
 * so that a frame converted on the device gets the very codes the host
 * gives it (tests/test-cuda.c, the /cuda/frame cases).  That holds only without
 * contraction of a·b + c into fused multiply-adds, which round once where
 * these formulas round twice: ehat-frame.c turns contraction off with a
 * pragma, and nvcc compiles the frame kernels with -fmad=false.
 *
 * Valid C11 and C++ (CUDA and the CUDA emulator's host compiler), so no
 * GLib here. */
#ifndef EHAT_FRAME_DESC_H
#define EHAT_FRAME_DESC_H

#include <math.h>

#if defined(__CUDACC__)
#define EHAT_FD_FN __host__ __device__ static inline
#else
#define EHAT_FD_FN static inline
#endif

typedef enum
{
  EHAT_FD_PACKED_RGB,
  EHAT_FD_PLANAR_YUV,           /* Y, U, V planes (order in u_plane/v_plane) */
  EHAT_FD_SEMI_YUV,             /* Y, interleaved chroma */
  EHAT_FD_GRAY,
  EHAT_FD_PLANAR_RGB,           /* R', G', B' planes (r, g, b: their planes) */
  EHAT_FD_PACKED_YUV,           /* Y'CbCr in plane 0: 4:2:2 macropixels
                                 * (YUY2 & co.) or 4:4:4 pixels (AYUV) */
} EhatFrameKind;

typedef struct
{
  int kind;                     /* EhatFrameKind */
  int width, height;
  int n_planes;
  int row_bytes[4];             /* bytes of pixels per row of each plane */
  int rows[4];
  int spp;                      /* samples per pixel along plane 0's rows
                                 * (packed 4:2:2: 2; planar: 1) */
  int y_idx;                    /* the luma sample within a pixel's */
  int r, g, b;                  /* packed RGB: the channels' samples within
                                 * a pixel's; planar RGB: their planes */
  int a;                        /* the alpha sample within a pixel's in
                                 * plane a_plane, −1: none */
  int a_plane;                  /* alpha's plane: 0 packed, 3 planar */
  int x;                        /* packed 4-sample RGB or 4:4:4 Y'CbCr
                                 * without alpha: the sample written opaque
                                 * (RGBx & co., Y412_LE), −1: none */
  int sub_x, sub_y;             /* chroma subsampling shifts (0 or 1) */
  int cw, ch;                   /* chroma plane size */
  int u_plane, v_plane;         /* planes of U and V (packed: 0) */
  int c_step, u_idx, v_idx;     /* chroma samples: step within a row and
                                 * the U/V offsets (2, 0/1 interleaved; 4
                                 * and the macropixel's, packed) */
  int c_slots;                  /* chroma samples a row holds: cw, or for
                                 * v210 its groups' (a multiple of 3) */
  int depth;                    /* bits per sample */
  int shift;                    /* 16-bit samples: bits below the value */
  int pack3;                    /* v210, Y410: samples three to a 32-bit
                                 * LE word, 10 bits each from bit 0 */
  int pack3_top;                /* those words' top two bits: v210 0, Y410
                                 * 3 (unused alpha, opaque) */
  int cosited;                  /* left-sited subsampled chroma */
  /* Y'CbCr: luma weights and the code mapping of the matrix, range and
   * depth */
  double kr, kg, kb;
  double y_off, y_scale, c_off, c_scale;
  int max_code;
} EhatFrameDesc;

/* The 32-bit word of v210 or Y410 holding sample i, and the sample's
 * first bit in it. */
EHAT_FD_FN unsigned
ehat_fd_word3 (const unsigned char *row, int i, int *bit)
{
  const unsigned char *w = row + 4 * (i / 3);

  *bit = 10 * (i % 3);
  return w[0] | (unsigned) w[1] << 8 | (unsigned) w[2] << 16
      | (unsigned) w[3] << 24;
}

/* Sample i of a row (16-bit words little-endian, value above `shift`;
 * v210, Y410: slot i % 3 of word i / 3). */
EHAT_FD_FN int
ehat_fd_get (const EhatFrameDesc *d, const unsigned char *row, int i)
{
  if (d->pack3) {
    int bit;
    unsigned v = ehat_fd_word3 (row, i, &bit);

    return (int) (v >> bit) & 0x3ff;
  }
  if (d->depth > 8) {
    int v = row[2 * i] | (row[2 * i + 1] << 8);
    return (v >> d->shift) & ((1 << d->depth) - 1);
  }
  return row[i];
}

EHAT_FD_FN void
ehat_fd_put (const EhatFrameDesc *d, unsigned char *row, int i, int code)
{
  if (d->pack3) {
    /* read-modify-write of the word: one writer per word (the device's
     * v210 threads each own a group of six pixels, Y410's a pixel); its
     * top two bits are the format's */
    int bit;
    unsigned v = ehat_fd_word3 (row, i, &bit);
    unsigned char *w = row + 4 * (i / 3);

    v = (v & ~(0x3ffu << bit) & 0x3fffffffu) | (unsigned) code << bit
        | (unsigned) d->pack3_top << 30;
    w[0] = (unsigned char) (v & 0xff);
    w[1] = (unsigned char) (v >> 8 & 0xff);
    w[2] = (unsigned char) (v >> 16 & 0xff);
    w[3] = (unsigned char) (v >> 24);
    return;
  }
  if (d->depth > 8) {
    unsigned v = (unsigned) code << d->shift;
    row[2 * i] = (unsigned char) (v & 0xff);
    row[2 * i + 1] = (unsigned char) (v >> 8);
  } else {
    row[i] = (unsigned char) code;
  }
}

/* Where pixel x's luma is in a row of plane 0, in samples. */
EHAT_FD_FN int
ehat_fd_luma_index (const EhatFrameDesc *d, int x)
{
  return x * d->spp + d->y_idx;
}

/* The luma samples a row holds: its pixels, and for packed 4:2:2 of odd
 * width the unused second luma of the last macropixel (v210: up to the
 * end of the last group of six), which writers fill with the last pixel's
 * (so that no byte of a frame is left unwritten). */
EHAT_FD_FN int
ehat_fd_luma_slots (const EhatFrameDesc *d)
{
  return d->kind == EHAT_FD_PACKED_YUV ? d->c_slots << d->sub_x : d->width;
}

/* Nearest code, clamped to [0, max_code]; NaN → 0. */
EHAT_FD_FN int
ehat_fd_code (double v, int max_code)
{
  if (!(v > 0.0))
    return 0;
  if (v >= max_code)
    return max_code;
  return (int) floor (v + 0.5);
}

EHAT_FD_FN float
ehat_fd_clamp01 (double v)
{
  return (float) (v < 0.0 ? 0.0 : v > 1.0 ? 1.0 : v);
}

/* A chroma code as a colour difference in [−½, ½] (rounded to float:
 * the host keeps a float plane of them). */
EHAT_FD_FN float
ehat_fd_chroma (const EhatFrameDesc *d, int code)
{
  return (float) ((code - d->c_off) / d->c_scale);
}

/* Bilinear taps from full-resolution position i to the subsampled grid of
 * cn samples: centred chroma sits at 2j + 0.5, left-sited (horizontal
 * only) at 2j. */
EHAT_FD_FN void
ehat_fd_taps (int i, int cn, int sub, int cosited, int *i0, int *i1,
    float *f)
{
  double c, fl;
  int j;

  if (!sub)
    c = i;
  else if (cosited)
    c = i / 2.0;
  else
    c = (i + 0.5) / 2.0 - 0.5;
  fl = floor (c);
  j = (int) fl;
  *i0 = j < 0 ? 0 : j > cn - 1 ? cn - 1 : j;
  *i1 = j + 1 < 0 ? 0 : j + 1 > cn - 1 ? cn - 1 : j + 1;
  *f = (float) (c - fl);
}

/* R'G'B' in [0, 1] of a luma code and the colour differences interpolated
 * from their four neighbours (b0/r0: the upper row's pair at the two
 * taps, b1/r1 the lower's), in float as the host always computed them. */
EHAT_FD_FN void
ehat_fd_yuv_to_rgb (const EhatFrameDesc *d, int y_code, const float b0[2],
    const float b1[2], const float r0[2], const float r1[2], float wx,
    float wy, float rgb[3])
{
  double yy = (y_code - d->y_off) / d->y_scale;
  double cb = (1 - wy) * ((1 - wx) * b0[0] + wx * b0[1])
      + wy * ((1 - wx) * b1[0] + wx * b1[1]);
  double cr = (1 - wy) * ((1 - wx) * r0[0] + wx * r0[1])
      + wy * ((1 - wx) * r1[0] + wx * r1[1]);
  double r = yy + 2.0 * (1.0 - d->kr) * cr;
  double b = yy + 2.0 * (1.0 - d->kb) * cb;
  double g = (yy - d->kr * r - d->kb * b) / d->kg;

  rgb[0] = ehat_fd_clamp01 (r);
  rgb[1] = ehat_fd_clamp01 (g);
  rgb[2] = ehat_fd_clamp01 (b);
}

/* R'G'B' (and alpha): a sample code as a value in [0, 1], and back. */
EHAT_FD_FN float
ehat_fd_rgb_value (const EhatFrameDesc *d, int code)
{
  return (float) code / (float) d->max_code;
}

EHAT_FD_FN int
ehat_fd_rgb_code (const EhatFrameDesc *d, float v)
{
  return ehat_fd_code (v * (double) d->max_code, d->max_code);
}

/* Pixel x's alpha in a row of plane a_plane (d->a ≥ 0), in [0, 1]. */
EHAT_FD_FN float
ehat_fd_alpha (const EhatFrameDesc *d, const unsigned char *row, int x)
{
  return ehat_fd_rgb_value (d, ehat_fd_get (d, row, x * d->spp + d->a));
}

EHAT_FD_FN float
ehat_fd_gray_to_rgb (const EhatFrameDesc *d, int y_code)
{
  return ehat_fd_clamp01 ((y_code - d->y_off) / d->y_scale);
}

/* Y' and the two colour differences of one RGB pixel, clamped first. */
EHAT_FD_FN void
ehat_fd_ypbpr (const EhatFrameDesc *d, float r, float g, float b,
    double *yy, double *cb, double *cr)
{
  double rr = ehat_fd_clamp01 (r), gg = ehat_fd_clamp01 (g);
  double bb = ehat_fd_clamp01 (b);
  double l = d->kr * rr + d->kg * gg + d->kb * bb;

  *yy = l;
  if (cb)
    *cb = (bb - l) / (2.0 * (1.0 - d->kb));
  if (cr)
    *cr = (rr - l) / (2.0 * (1.0 - d->kr));
}

EHAT_FD_FN int
ehat_fd_luma_code (const EhatFrameDesc *d, float r, float g, float b)
{
  double yy;

  ehat_fd_ypbpr (d, r, g, b, &yy, 0, 0);
  return ehat_fd_code (d->y_off + d->y_scale * yy, d->max_code);
}

/* The taps of subsampled chroma sample (cx, cy) (4:2:0 or 4:2:2, where
 * sub_y = 0 keeps one row): horizontally a [1 1]/2 box for centred chroma
 * and [1 2 1]/4 around the co-sited column for left siting, vertically
 * [1 1]/2 (4:2:0).  Tap t of EHAT_FD_N_TAPS: its pixel (clamped: taps
 * past the edge repeat the last row or column, as odd sizes need) and its
 * weight, or weight 0 for a tap the layout does not use. */
#define EHAT_FD_N_TAPS 6
EHAT_FD_FN double
ehat_fd_chroma_tap (const EhatFrameDesc *d, int cx, int cy, int t,
    int *px, int *py)
{
  int dy = t / 3, dx = t % 3 - 1;
  int sx = (cx << d->sub_x) + dx, sy = (cy << d->sub_y) + dy;

  if ((!d->cosited && dx < 0) || dy > d->sub_y)
    return 0.0;
  *px = sx < 0 ? 0 : sx > d->width - 1 ? d->width - 1 : sx;
  *py = sy > d->height - 1 ? d->height - 1 : sy;
  return d->cosited ? (dx == 0 ? 0.5 : 0.25) : 0.5;
}

/* The chroma codes of weighted sums sb, sr of colour differences. */
EHAT_FD_FN void
ehat_fd_chroma_codes (const EhatFrameDesc *d, double sb, double sr,
    double sw, int *u, int *v)
{
  *u = ehat_fd_code (d->c_off + d->c_scale * sb / sw, d->max_code);
  *v = ehat_fd_code (d->c_off + d->c_scale * sr / sw, d->max_code);
}

/* Alpha: ehat_plane_resize_bilinear()'s taps for output position i along
 * an axis of n_in inputs, ratio = n_in / n_out (pixel centres aligned,
 * edges clamped), and its blend of the four neighbours, in float. */
EHAT_FD_FN void
ehat_fd_resize_taps (int i, double ratio, int n_in, int *i0, int *i1,
    float *f)
{
  double c = (i + 0.5) * ratio - 0.5;

  c = c < 0.0 ? 0.0 : c > n_in - 1.0 ? n_in - 1.0 : c;
  *i0 = (int) c;
  *i1 = *i0 + 1 < n_in ? *i0 + 1 : n_in - 1;
  *f = (float) (c - *i0);
}

EHAT_FD_FN float
ehat_fd_lerp2 (float a00, float a01, float a10, float a11, float fx,
    float fy)
{
  return (1 - fy) * ((1 - fx) * a00 + fx * a01)
      + fy * ((1 - fx) * a10 + fx * a11);
}

/* In libehat's own C (which includes ehat-frame.h, and GLib, first): the
 * description of a frame; FALSE with EHAT_ERROR_INVALID_ARGUMENT for an
 * invalid frame or colour description (NULL: EHAT_COLOR_INFO_INIT), as
 * ehat_frame_read() checks them. */
#ifdef EHAT_FRAME_H
G_BEGIN_DECLS
gboolean ehat_frame_describe (const EhatFrame *frame,
    const EhatColorInfo *color, EhatFrameDesc *d, GError **error);
G_END_DECLS
#endif

#endif /* EHAT_FRAME_DESC_H */
