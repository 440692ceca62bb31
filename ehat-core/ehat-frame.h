/* libehat — conversion between video frames and planar float RGB.
 *
 * The network sees planar float RGB in [0, 1] (ehat.h).  These functions
 * convert packed and planar RGB, YUV and grey frames of 8 to 16 bits to
 * and from it.  The caller passes plane pointers and strides (bytes), in the
 * plane order GStreamer uses for the same format (YV12: Y, V, U; NV12: Y,
 * interleaved UV), and says which matrix, range and chroma siting the YUV
 * data has.  Nothing here knows about GStreamer.
 *
 * Reading clamps the RGB result to [0, 1] (YUV can encode colours outside
 * the RGB cube; the models were trained on [0, 1]).  Writing clamps and
 * rounds to the nearest code.  RGB formats are taken as full range.
 * Alpha never goes through the network: read it with
 * ehat_frame_read_alpha(), upscale it with ehat_plane_resize_bilinear() and
 * pass it to ehat_frame_write().
 */
#ifndef EHAT_FRAME_H
#define EHAT_FRAME_H

#include <glib.h>

G_BEGIN_DECLS

typedef enum
{
  EHAT_PIXEL_RGB,               /* packed 24-bit */
  EHAT_PIXEL_BGR,
  EHAT_PIXEL_RGBA,              /* packed 32-bit, byte order as named */
  EHAT_PIXEL_BGRA,
  EHAT_PIXEL_RGBx,
  EHAT_PIXEL_BGRx,
  EHAT_PIXEL_xRGB,
  EHAT_PIXEL_xBGR,
  EHAT_PIXEL_ARGB,
  EHAT_PIXEL_ABGR,
  EHAT_PIXEL_I420,              /* planar 4:2:0: Y, U, V */
  EHAT_PIXEL_YV12,              /* planar 4:2:0: Y, V, U */
  EHAT_PIXEL_NV12,              /* Y, interleaved UV */
  EHAT_PIXEL_NV21,              /* Y, interleaved VU */
  EHAT_PIXEL_Y444,              /* planar 4:4:4: Y, U, V */
  EHAT_PIXEL_GRAY8,             /* luma only */
  EHAT_PIXEL_I420_10LE,         /* I420, 16-bit LE words, 10 bits in the LSBs */
  EHAT_PIXEL_P010_10LE,         /* NV12, 16-bit LE words, 10 bits in the MSBs */
  /* 4:2:2 (chroma halved horizontally only), and more bits: what
   * professional sources (ProRes, DNxHR, 10/12-bit HEVC) decode to and
   * their encoders take, so that no conversion in front of ehatsr drops
   * chroma or bits.  16-bit LE words; "_12LE" and "_10LE" hold the value in
   * the LSBs, P012 in the MSBs. */
  EHAT_PIXEL_Y42B,              /* planar 4:2:2: Y, U, V */
  EHAT_PIXEL_NV16,              /* 4:2:2, Y, interleaved UV */
  EHAT_PIXEL_I422_10LE,
  EHAT_PIXEL_I422_12LE,
  EHAT_PIXEL_Y444_10LE,
  EHAT_PIXEL_Y444_12LE,
  EHAT_PIXEL_Y444_16LE,
  EHAT_PIXEL_I420_12LE,
  EHAT_PIXEL_P012_LE,           /* NV12, 12 bits in the MSBs */
  EHAT_PIXEL_P016_LE,           /* NV12, 16 bits */
  EHAT_PIXEL_GRAY16_LE,         /* luma only, 16 bits */
  /* planar R'G'B' (planes G, B, R), as film scans (DPX) decode */
  EHAT_PIXEL_GBR,
  EHAT_PIXEL_GBR_10LE,
  EHAT_PIXEL_GBR_12LE,
  /* packed 4:2:2, two pixels in one macropixel (an odd width's last one
   * padded): what webcams (v4l2src) and SDI capture cards deliver.  Y210
   * and Y212_LE: YUY2's order in 16-bit LE words, value in the MSBs. */
  EHAT_PIXEL_YUY2,              /* Y0 U Y1 V */
  EHAT_PIXEL_UYVY,              /* U Y0 V Y1 */
  EHAT_PIXEL_YVYU,              /* Y0 V Y1 U */
  EHAT_PIXEL_Y210,
  EHAT_PIXEL_Y212_LE,
  /* packed 4:4:4 with alpha (AYUV64: 16-bit LE words) */
  EHAT_PIXEL_AYUV,
  EHAT_PIXEL_VUYA,
  EHAT_PIXEL_AYUV64,
  /* packed RGB with alpha in 16-bit LE words, as 16-bit PNG and TIFF
   * decode (ARGB64: GStreamer's native-endian name for ARGB64_LE, what
   * pngdec gives) */
  EHAT_PIXEL_RGBA64_LE,
  EHAT_PIXEL_BGRA64_LE,
  EHAT_PIXEL_ARGB64_LE,
  EHAT_PIXEL_ABGR64_LE,
  EHAT_PIXEL_ARGB64,
  /* planar with an alpha plane after the others (plane 3): VP8/VP9 with
   * alpha (A420), ProRes 4444 (A444_10LE), film scans with matte (GBRA) */
  EHAT_PIXEL_A420,
  EHAT_PIXEL_A420_10LE,
  EHAT_PIXEL_A422_10LE,
  EHAT_PIXEL_A444_10LE,
  EHAT_PIXEL_GBRA,
  EHAT_PIXEL_GBRA_10LE,
  EHAT_PIXEL_GBRA_12LE,
  /* 10-bit packed 4:2:2 of SDI capture (DeckLink, AJA) and uncompressed
   * QuickTime: UYVY's order, three samples in each 32-bit LE word (bits
   * 0–9, 10–19, 20–29), six pixels in four words, rows of whole groups
   * (a group past the width padded) */
  EHAT_PIXEL_v210,
  /* semi-planar 4:4:4 and 4:2:2 with V first (hardware decoders, V4L2) */
  EHAT_PIXEL_NV24,
  EHAT_PIXEL_NV61,
  EHAT_PIXEL_VYUY,              /* V Y0 U Y1 */
  /* packed 4:4:4 of VA-API's HEVC 4:4:4 decoding, without alpha:
   * Y410 U, Y, V in bits 0–9, 10–19, 20–29 of a 32-bit LE word (the top
   * two written 3, as GStreamer writes them); Y412_LE U Y V and an unused
   * sample (written opaque) in 16-bit LE words, 12 bits in the MSBs */
  EHAT_PIXEL_Y410,
  EHAT_PIXEL_Y412_LE,
  EHAT_PIXEL_N_FORMATS
} EhatPixelFormat;

typedef enum
{
  EHAT_MATRIX_BT601,
  EHAT_MATRIX_BT709,
  EHAT_MATRIX_BT2020,
} EhatColorMatrix;

typedef enum
{
  /* Y 16–235, C 16–240 (× 2^(n−8) for n bits) */
  EHAT_RANGE_LIMITED,
  /* 0 to 2^n − 1, C centred on 2^(n−1) */
  EHAT_RANGE_FULL,
} EhatColorRange;

/* Where 4:2:0 chroma samples sit relative to luma. */
typedef enum
{
  EHAT_CHROMA_CENTER,           /* JPEG / MPEG-1: centre of each 2×2 block */
  EHAT_CHROMA_LEFT,             /* MPEG-2 / H.264 default: co-sited with the
                                 * left column, vertically centred */
} EhatChromaSiting;

typedef struct
{
  EhatColorMatrix matrix;
  EhatColorRange range;
  EhatChromaSiting siting;
} EhatColorInfo;

#define EHAT_COLOR_INFO_INIT { EHAT_MATRIX_BT709, EHAT_RANGE_LIMITED, \
    EHAT_CHROMA_CENTER }

/* Planes a frame has at most (planar Y'CbCr or RGB, then alpha). */
#define EHAT_FRAME_MAX_PLANES 4

typedef struct
{
  EhatPixelFormat format;
  int width;
  int height;
  guint8 *data[EHAT_FRAME_MAX_PLANES];  /* planes, GStreamer order */
  int stride[EHAT_FRAME_MAX_PLANES];    /* bytes per row of each plane */
} EhatFrame;

/* Format properties. */
const char *ehat_pixel_format_to_string (EhatPixelFormat format);
int ehat_pixel_format_n_planes (EhatPixelFormat format);
gboolean ehat_pixel_format_is_yuv (EhatPixelFormat format);
gboolean ehat_pixel_format_has_alpha (EhatPixelFormat format);
int ehat_pixel_format_depth (EhatPixelFormat format);

/* Minimum stride and height of plane `plane` for a frame of width×height
 * (tests and callers that allocate their own frames). */
gboolean ehat_frame_plane_size (EhatPixelFormat format, int width,
    int height, int plane, int *min_stride, int *rows);

/* frame → rgb: 3 planes of width×height floats in [0, 1]. */
gboolean ehat_frame_read (const EhatFrame *frame, const EhatColorInfo *color,
    float *rgb, GError **error);

/* rgb (3 planes of width×height floats) → frame.  alpha: one plane of
 * width×height floats in [0, 1] or NULL (opaque); ignored by formats
 * without alpha. */
gboolean ehat_frame_write (const float *rgb, const float *alpha,
    const EhatColorInfo *color, EhatFrame *frame, GError **error);

/* The alpha plane of a frame with alpha as width×height floats in [0, 1]. */
gboolean ehat_frame_read_alpha (const EhatFrame *frame, float *alpha,
    GError **error);

/* Bilinear resize of one float plane (pixel centres aligned, edges
 * clamped): cheap, good enough for alpha. */
void ehat_plane_resize_bilinear (const float *in, int width, int height,
    float *out, int out_width, int out_height);

G_END_DECLS

#endif /* EHAT_FRAME_H */
