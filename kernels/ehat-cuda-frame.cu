/* Video frames in and out of the network on the device: the colour
 * conversions of ehat-core/ehat-frame.c fused with the backend's input
 * (reflect padding, normalisation, NHWC) and output (crop, denormalisation)
 * kernels, so that a frame crosses the bus as its own bytes (1.5 bytes a
 * pixel for 8-bit 4:2:0 instead of 12 as float planes) and no host thread
 * converts it.
 *
 * The maths is ehat-frame-desc.h's, shared with the host: with -fmad=false
 * (kernels/meson.build) these kernels give the codes ehat_frame_write()
 * gives, bit for bit, alpha (resized bilinearly from the input frame's)
 * included.  Planes are read from and written to staging buffers with the
 * rows packed (strides = row_bytes). */
#include "ehat-cuda-common.cuh"
#include "ehat-frame-desc.h"

#include <string.h>

struct Planes
{
  unsigned char *p[4];
  int stride[4];
};

static Planes
make_planes (unsigned char *const planes[4], const int strides[4])
{
  Planes pl;

  for (int i = 0; i < 4; i++) {
    pl.p[i] = planes[i];
    pl.stride[i] = strides[i];
  }
  return pl;
}

__device__ __forceinline__ const unsigned char *
row_of (const Planes &pl, int plane, int y)
{
  return pl.p[plane] + (size_t) y * pl.stride[plane];
}

/* The R'G'B' of pixel (x, y) as ehat_frame_read() computes it. */
__device__ void
read_pixel (const EhatFrameDesc &d, const Planes &pl, int x, int y,
    float rgb[3])
{
  const unsigned char *row = row_of (pl, 0, y);

  if (d.kind == EHAT_FD_PACKED_RGB) {
    int i = x * d.spp;
    rgb[0] = ehat_fd_rgb_value (&d, ehat_fd_get (&d, row, i + d.r));
    rgb[1] = ehat_fd_rgb_value (&d, ehat_fd_get (&d, row, i + d.g));
    rgb[2] = ehat_fd_rgb_value (&d, ehat_fd_get (&d, row, i + d.b));
  } else if (d.kind == EHAT_FD_GRAY) {
    rgb[0] = rgb[1] = rgb[2] = ehat_fd_gray_to_rgb (&d,
        ehat_fd_get (&d, row, x));
  } else if (d.kind == EHAT_FD_PLANAR_RGB) {
    rgb[0] = ehat_fd_rgb_value (&d, ehat_fd_get (&d, row_of (pl, d.r, y), x));
    rgb[1] = ehat_fd_rgb_value (&d, ehat_fd_get (&d, row_of (pl, d.g, y), x));
    rgb[2] = ehat_fd_rgb_value (&d, ehat_fd_get (&d, row_of (pl, d.b, y), x));
  } else {
    int x0, x1, y0, y1;
    float fx, fy, b0[2], b1[2], r0[2], r1[2];

    ehat_fd_taps (x, d.cw, d.sub_x, d.cosited, &x0, &x1, &fx);
    ehat_fd_taps (y, d.ch, d.sub_y, 0, &y0, &y1, &fy);
    const unsigned char *u0 = row_of (pl, d.u_plane, y0);
    const unsigned char *u1 = row_of (pl, d.u_plane, y1);
    const unsigned char *v0 = row_of (pl, d.v_plane, y0);
    const unsigned char *v1 = row_of (pl, d.v_plane, y1);
    int i0 = x0 * d.c_step, i1 = x1 * d.c_step;

    b0[0] = ehat_fd_chroma (&d, ehat_fd_get (&d, u0, i0 + d.u_idx));
    b0[1] = ehat_fd_chroma (&d, ehat_fd_get (&d, u0, i1 + d.u_idx));
    b1[0] = ehat_fd_chroma (&d, ehat_fd_get (&d, u1, i0 + d.u_idx));
    b1[1] = ehat_fd_chroma (&d, ehat_fd_get (&d, u1, i1 + d.u_idx));
    r0[0] = ehat_fd_chroma (&d, ehat_fd_get (&d, v0, i0 + d.v_idx));
    r0[1] = ehat_fd_chroma (&d, ehat_fd_get (&d, v0, i1 + d.v_idx));
    r1[0] = ehat_fd_chroma (&d, ehat_fd_get (&d, v1, i0 + d.v_idx));
    r1[1] = ehat_fd_chroma (&d, ehat_fd_get (&d, v1, i1 + d.v_idx));
    ehat_fd_yuv_to_rgb (&d, ehat_fd_get (&d, row, ehat_fd_luma_index (&d, x)),
        b0, b1, r0, r1, fx, fy, rgb);
  }
}

/* input_kernel (ehat-cuda-elementwise.cu) reading the frame itself. */
template <typename T>
__global__ void
frame_input_kernel (EhatFrameDesc d, Planes pl, int W, int H, float m0,
    float m1, float m2, float range, T *x)
{
  size_t total = (size_t) H * W;
  GRID_STRIDE (p, total) {
    int xx = (int) (p % W), y = (int) (p / W);
    float rgb[3];

    read_pixel (d, pl, ehat_dev_reflect (xx, d.width),
        ehat_dev_reflect (y, d.height), rgb);
    st (x + p * 3 + 0, (rgb[0] - m0) * range);
    st (x + p * 3 + 1, (rgb[1] - m1) * range);
    st (x + p * 3 + 2, (rgb[2] - m2) * range);
  }
}

extern "C" cudaError_t
ehat_cuda_frame_input (cudaStream_t s, int dt, const EhatFrameDesc *d,
    unsigned char *const planes[4], const int strides[4], int W, int H,
    float m0, float m1, float m2, float range, void *x)
{
  size_t total = (size_t) H * W;
  Planes pl = make_planes (planes, strides);

  EHAT_DISPATCH (dt, frame_input_kernel<T> <<< ehat_blocks (total),
          EHAT_THREADS, 0, s >>> (*d, pl, W, H, m0, m1, m2, range,
              (T *) x));
  return cudaGetLastError ();
}

/* The output pixel (x, y) as output_kernel hands it to the host. */
template <typename T>
__device__ __forceinline__ void
out_pixel (const T *x, int W, int xx, int y, float m0, float m1, float m2,
    float range, float rgb[3])
{
  const T *src = x + ((size_t) y * W + xx) * 3;

  rgb[0] = ld (src) / range + m0;
  rgb[1] = ld (src + 1) / range + m1;
  rgb[2] = ld (src + 2) / range + m2;
}

/* The input frame's alpha, where it is carried to the output. */
struct AlphaSrc
{
  const unsigned char *p;       /* its alpha plane; NULL: write opaque */
  EhatFrameDesc d;              /* the input frame's layout */
  double sx, sy;                /* input / output size */
};

/* ehat_plane_resize_bilinear() of the input alpha at output (x, y), as the
 * code ehat_frame_write() gives it in the output layout `d`. */
__device__ int
alpha_code (const AlphaSrc &as, const EhatFrameDesc &d, int x, int y)
{
  int x0, x1, y0, y1;
  float fx, fy;

  if (!as.p)
    return d.max_code;
  ehat_fd_resize_taps (x, as.sx, as.d.width, &x0, &x1, &fx);
  ehat_fd_resize_taps (y, as.sy, as.d.height, &y0, &y1, &fy);
  const unsigned char *r0 = as.p + (size_t) y0 * as.d.row_bytes[as.d.a_plane];
  const unsigned char *r1 = as.p + (size_t) y1 * as.d.row_bytes[as.d.a_plane];
  float v = ehat_fd_lerp2 (ehat_fd_alpha (&as.d, r0, x0),
      ehat_fd_alpha (&as.d, r0, x1), ehat_fd_alpha (&as.d, r1, x0),
      ehat_fd_alpha (&as.d, r1, x1), fx, fy);
  return ehat_fd_rgb_code (&d, v);
}

/* Packed and planar RGB and grey: one thread per pixel. */
template <typename T>
__global__ void
frame_output_pixels (const T *x, int W, float m0, float m1, float m2,
    float range, EhatFrameDesc d, Planes pl, AlphaSrc as)
{
  size_t total = (size_t) d.height * d.width;
  GRID_STRIDE (p, total) {
    int xx = (int) (p % d.width), y = (int) (p / d.width);
    unsigned char *row = pl.p[0] + (size_t) y * pl.stride[0];
    float rgb[3];

    out_pixel (x, W, xx, y, m0, m1, m2, range, rgb);
    if (d.kind == EHAT_FD_GRAY) {
      ehat_fd_put (&d, row, xx, ehat_fd_luma_code (&d, rgb[0], rgb[1],
              rgb[2]));
    } else if (d.kind == EHAT_FD_PLANAR_RGB) {
      ehat_fd_put (&d, pl.p[d.r] + (size_t) y * pl.stride[d.r], xx,
          ehat_fd_rgb_code (&d, rgb[0]));
      ehat_fd_put (&d, pl.p[d.g] + (size_t) y * pl.stride[d.g], xx,
          ehat_fd_rgb_code (&d, rgb[1]));
      ehat_fd_put (&d, pl.p[d.b] + (size_t) y * pl.stride[d.b], xx,
          ehat_fd_rgb_code (&d, rgb[2]));
      if (d.a >= 0)
        ehat_fd_put (&d, pl.p[d.a_plane] + (size_t) y * pl.stride[d.a_plane],
            xx, alpha_code (as, d, xx, y));
    } else {
      int i = xx * d.spp;
      ehat_fd_put (&d, row, i + d.r, ehat_fd_rgb_code (&d, rgb[0]));
      ehat_fd_put (&d, row, i + d.g, ehat_fd_rgb_code (&d, rgb[1]));
      ehat_fd_put (&d, row, i + d.b, ehat_fd_rgb_code (&d, rgb[2]));
      /* alpha resized from the input's, or opaque, as the host writes a
       * frame without an alpha plane (and the x byte of RGBx & co.) */
      if (d.a >= 0)
        ehat_fd_put (&d, row, i + d.a, alpha_code (as, d, xx, y));
      else if (d.x >= 0)
        ehat_fd_put (&d, row, i + d.x, d.max_code);
    }
  }
}

/* YUV: chroma samples a thread writes.  v210's three to a word: the
 * three of a group of six pixels, whose four words no other thread
 * touches (ehat_fd_put() reads and rewrites a word; Y410's word is one
 * pixel's). */
static __host__ __device__ int
chroma_per_thread (const EhatFrameDesc &d)
{
  return d.pack3 && d.sub_x ? 3 : 1;
}

/* Chroma sample (cx, cy) and the luma (and alpha) of the pixels it covers
 * (one, or a 2×1 or 2×2 block cut at odd edges; packed 4:2:2 fills its
 * last macropixel, v210 its last group, as ehat_fd_luma_slots() says). */
template <typename T>
__device__ void
output_chroma_block (const T *x, int W, float m0, float m1, float m2,
    float range, const EhatFrameDesc &d, const Planes &pl,
    const AlphaSrc &as, int cx, int cy)
{
  int nx = 1 << d.sub_x, ny = 1 << d.sub_y, slots = ehat_fd_luma_slots (&d);
  double sb = 0.0, sr = 0.0, sw = 0.0, yy, cb, cr;
  float rgb[3];
  int u, v;

  for (int j = 0; j < ny && cy * ny + j < d.height; j++)
    for (int i = 0; i < nx && cx * nx + i < slots; i++) {
      int px = cx * nx + i, py = cy * ny + j;
      int sx = px < d.width ? px : d.width - 1;
      unsigned char *row = pl.p[0] + (size_t) py * pl.stride[0];

      out_pixel (x, W, sx, py, m0, m1, m2, range, rgb);
      ehat_fd_put (&d, row, ehat_fd_luma_index (&d, px),
          ehat_fd_luma_code (&d, rgb[0], rgb[1], rgb[2]));
      if (d.a >= 0)
        ehat_fd_put (&d, pl.p[d.a_plane] + (size_t) py * pl.stride[d.a_plane],
            px * d.spp + d.a, alpha_code (as, d, sx, py));
      else if (d.x >= 0)
        ehat_fd_put (&d, row, px * d.spp + d.x, d.max_code);
    }
  if (!d.sub_x && !d.sub_y) {
    out_pixel (x, W, cx, cy, m0, m1, m2, range, rgb);
    ehat_fd_ypbpr (&d, rgb[0], rgb[1], rgb[2], &yy, &sb, &sr);
    sw = 1.0;
  } else {
    for (int t = 0; t < EHAT_FD_N_TAPS; t++) {
      int sx, sy;
      double wt = ehat_fd_chroma_tap (&d, cx, cy, t, &sx, &sy);

      if (wt == 0.0)
        continue;
      out_pixel (x, W, sx, sy, m0, m1, m2, range, rgb);
      ehat_fd_ypbpr (&d, rgb[0], rgb[1], rgb[2], &yy, &cb, &cr);
      sb += wt * cb;
      sr += wt * cr;
      sw += wt;
    }
  }
  ehat_fd_chroma_codes (&d, sb, sr, sw, &u, &v);
  ehat_fd_put (&d, pl.p[d.u_plane] + (size_t) cy * pl.stride[d.u_plane],
      cx * d.c_step + d.u_idx, u);
  ehat_fd_put (&d, pl.p[d.v_plane] + (size_t) cy * pl.stride[d.v_plane],
      cx * d.c_step + d.v_idx, v);
}

template <typename T>
__global__ void
frame_output_yuv (const T *x, int W, float m0, float m1, float m2,
    float range, EhatFrameDesc d, Planes pl, AlphaSrc as)
{
  int per = chroma_per_thread (d), units = d.c_slots / per;
  size_t total = (size_t) d.ch * units;
  GRID_STRIDE (p, total) {
    int cy = (int) (p / units), c0 = (int) (p % units) * per;

    for (int k = 0; k < per; k++)
      output_chroma_block (x, W, m0, m1, m2, range, d, pl, as, c0 + k, cy);
  }
}

extern "C" cudaError_t
ehat_cuda_frame_output (cudaStream_t s, int dt, const void *x, int W,
    float m0, float m1, float m2, float range, const EhatFrameDesc *d,
    unsigned char *const planes[4], const int strides[4],
    const EhatFrameDesc *alpha_from, const void *alpha_plane)
{
  Planes pl = make_planes (planes, strides);
  AlphaSrc as;

  memset (&as, 0, sizeof (as));
  if (alpha_from && alpha_plane) {
    as.p = (const unsigned char *) alpha_plane;
    as.d = *alpha_from;
    as.sx = (double) alpha_from->width / d->width;
    as.sy = (double) alpha_from->height / d->height;
  }

  if (d->kind == EHAT_FD_PACKED_RGB || d->kind == EHAT_FD_GRAY
      || d->kind == EHAT_FD_PLANAR_RGB) {
    size_t total = (size_t) d->height * d->width;
    EHAT_DISPATCH (dt, frame_output_pixels<T> <<< ehat_blocks (total),
            EHAT_THREADS, 0, s >>> ((const T *) x, W, m0, m1, m2, range, *d,
                pl, as));
  } else {
    size_t total = (size_t) d->ch * (d->c_slots / chroma_per_thread (*d));
    EHAT_DISPATCH (dt, frame_output_yuv<T> <<< ehat_blocks (total),
            EHAT_THREADS, 0, s >>> ((const T *) x, W, m0, m1, m2, range, *d,
                pl, as));
  }
  return cudaGetLastError ();
}
