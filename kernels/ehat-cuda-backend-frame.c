/* The CUDA backend's input and output (ehat-cuda-backend-private.h): float
 * planes to and from the network's NHWC activations, and video frames
 * converted on the device (ehat-cuda-frame.cu) through page-locked
 * staging, so that 8-bit frames cross the bus instead of fp32 planes. */
#include "ehat-cuda-backend-private.h"

#include <string.h>

/* ---- input / output ---- */

void
cuda_input (EhatBackend *be, const float *host, int n, int w, int h, int W,
    int H, const float mean[3], float range, float *x)
{
  EhatCudaBackend *cb = CB (be);
  gsize bytes = (gsize) n * 3 * h * w * sizeof (float);
  float *stage;

  if (!enter (cb, "input") || !(stage = scratch (cb, SCR_IN, bytes)))
    return;
  record_cuda (cb, cudaMemcpyAsync (stage, host, bytes,
          cudaMemcpyHostToDevice, cb->stream), "input copy");
  if (!cb->error)
    record_cuda (cb, ehat_cuda_input (cb->stream, cb->dt, stage, n, w, h, W,
            H, mean[0], mean[1], mean[2], range, x), "input");
}

void
cuda_output (EhatBackend *be, const float *x, int n, int W, int H, int w,
    int h, const float mean[3], float range, float *host)
{
  EhatCudaBackend *cb = CB (be);
  gsize bytes = (gsize) n * 3 * h * w * sizeof (float);
  float *stage;

  if (!enter (cb, "output") || !(stage = scratch (cb, SCR_OUT, bytes)))
    return;
  record_cuda (cb, ehat_cuda_output (cb->stream, cb->dt, x, n, W, H, w, h,
          mean[0], mean[1], mean[2], range, stage), "output");
  if (!cb->error)
    record_cuda (cb, cudaMemcpyAsync (host, stage, bytes,
            cudaMemcpyDeviceToHost, cb->stream), "output copy");
  /* the caller owns `host` as soon as we return */
  if (!cb->error)
    record_cuda (cb, cudaStreamSynchronize (cb->stream), "output");
}

/* Where each plane of a frame sits in a staging buffer, rows packed
 * (each plane 256-byte aligned); the total size. */
static gsize
frame_layout (const EhatFrameDesc *d, gsize off[4])
{
  gsize total = 0;

  for (int p = 0; p < 4; p++) {
    off[p] = total;
    if (p < d->n_planes)
      total += ((gsize) d->row_bytes[p] * d->rows[p] + 255) & ~(gsize) 255;
  }
  return total;
}

static void
frame_planes (const EhatFrameDesc *d, guint8 *base, const gsize off[4],
    guint8 *planes[4], int strides[4])
{
  for (int p = 0; p < 4; p++) {
    planes[p] = p < d->n_planes ? base + off[p] : base;
    strides[p] = p < d->n_planes ? d->row_bytes[p] : 0;
  }
}

/* Rows between a frame's planes (strided) and packed staging. */
static void
frame_copy (const EhatFrameDesc *d, guint8 *const dst[4],
    const int dst_stride[4], guint8 *const src[4], const int src_stride[4])
{
  for (int p = 0; p < d->n_planes; p++) {
    gsize row = d->row_bytes[p];

    if ((gsize) dst_stride[p] == row && (gsize) src_stride[p] == row)
      memcpy (dst[p], src[p], row * d->rows[p]);
    else
      for (int y = 0; y < d->rows[p]; y++)
        memcpy (dst[p] + (gsize) y * dst_stride[p],
            src[p] + (gsize) y * src_stride[p], row);
  }
}

void
cuda_frame_input (EhatBackend *be, const EhatFrame *frame,
    const EhatFrameDesc *d, int W, int H, const float mean[3], float range,
    float *x)
{
  EhatCudaBackend *cb = CB (be);
  gsize off[4], total = frame_layout (d, off);
  guint8 *host, *dev, *hp[4], *dp[4];
  int hs[4], ds[4];

  if (!enter (cb, "frame input") || !(host = pinned (cb, PIN_IN, total))
      || !(dev = scratch (cb, SCR_IN, total)))
    return;
  frame_planes (d, host, off, hp, hs);
  frame_planes (d, dev, off, dp, ds);
  frame_copy (d, hp, hs, frame->data, frame->stride);
  record_cuda (cb, cudaMemcpyAsync (dev, host, total, cudaMemcpyHostToDevice,
          cb->stream), "frame input copy");
  if (!cb->error)
    record_cuda (cb, ehat_cuda_frame_input (cb->stream, cb->dt, d, dp, ds, W,
            H, mean[0], mean[1], mean[2], range, x), "frame input");
}

void
cuda_frame_output (EhatBackend *be, const float *x, int W, int H,
    const float mean[3], float range, const EhatFrameDesc *d,
    EhatFrame *frame, const EhatFrameDesc *alpha_from)
{
  EhatCudaBackend *cb = CB (be);
  gsize off[4], a_off[4], total = frame_layout (d, off);
  guint8 *host, *dev, *hp[4], *dp[4];
  int hs[4], ds[4];

  (void) H;
  if (!enter (cb, "frame output") || !(host = pinned (cb, PIN_OUT, total))
      || !(dev = scratch (cb, SCR_OUT, total)))
    return;
  if (alpha_from && (alpha_from->a < 0 || !cb->scratch[SCR_IN])) {
    record_cuda (cb, cudaErrorInvalidValue, "frame output (no alpha input)");
    return;
  }
  frame_planes (d, host, off, hp, hs);
  frame_planes (d, dev, off, dp, ds);
  /* the input frame is still in the input staging, as frame_input left
   * it (frame_layout's planes), its alpha plane among them */
  if (alpha_from)
    frame_layout (alpha_from, a_off);
  record_cuda (cb, ehat_cuda_frame_output (cb->stream, cb->dt, x, W, mean[0],
          mean[1], mean[2], range, d, dp, ds, alpha_from, alpha_from ?
          (guint8 *) cb->scratch[SCR_IN] + a_off[alpha_from->a_plane] : NULL),
      "frame output");
  if (!cb->error)
    record_cuda (cb, cudaMemcpyAsync (host, dev, total,
            cudaMemcpyDeviceToHost, cb->stream), "frame output copy");
  if (!cb->error)
    record_cuda (cb, cudaStreamSynchronize (cb->stream), "frame output");
  /* the frame is written only from a complete result */
  if (!cb->error)
    frame_copy (d, frame->data, frame->stride, hp, hs);
}
