/* libehat — plain (non-learned) resampling of planar float images.
 *
 * The QoS fallback of the ehatsr element upscales late frames with this
 * instead of the network, and tools may use it as the classical baseline.
 */
#ifndef EHAT_RESAMPLE_H
#define EHAT_RESAMPLE_H

#include <glib.h>

G_BEGIN_DECLS

/* The cubic convolution kernel of Keys (1981) with a = −0.5 (the one of
 * MATLAB's imresize and Pillow; it reproduces quadratics exactly), at
 * distance x.  Support ]−2, 2[. */
double ehat_cubic_kernel (double x);

/* Bicubic resize of n_planes planes of width×height floats into n_planes
 * planes of out_width×out_height floats: pixel centres aligned (source
 * coordinate (x + 0.5)·width/out_width − 0.5, as PyTorch's
 * align_corners=False), edge pixels replicated, no antialiasing (meant for
 * upscaling; a downscale is a plain point-sampled cubic).  The result is
 * not clamped (cubic overshoots slightly at edges).  FALSE on invalid sizes
 * or when the small row buffers cannot be allocated. */
gboolean ehat_resize_bicubic (const float *in, int n_planes, int width,
    int height, float *out, int out_width, int out_height);

G_END_DECLS

#endif /* EHAT_RESAMPLE_H */
