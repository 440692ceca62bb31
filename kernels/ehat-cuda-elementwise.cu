/* Element-wise and reduction kernels of the CUDA backend: input/output
 * conversion, im2col and conv/linear epilogues (bias, activation, residual,
 * pixel shuffle), LayerNorm, axpby, channel attention, the CAM softmax.
 * fp32 throughout; semantics as the CPU backend (ehat-backend-cpu.c). */
#include "ehat-cuda-common.cuh"

/* ---- input / output ---- */

/* PyTorch 'reflect', extended periodically (EHAT-SPEC.md §1). */
__device__ __forceinline__ int
reflect (int i, int n)
{
  if (n == 1)
    return 0;
  int p = 2 * (n - 1);
  i %= p;
  if (i < 0)
    i += p;
  return i < n ? i : p - i;
}

__global__ void
input_kernel (const float *planar, int n, int w, int h, int W, int H,
    float m0, float m1, float m2, float range, float *x)
{
  size_t total = (size_t) n * H * W;
  GRID_STRIDE (p, total) {
    int xx = (int) (p % W);
    int y = (int) ((p / W) % H);
    size_t i = p / ((size_t) W * H);
    int sx = reflect (xx, w), sy = reflect (y, h);
    const float *img = planar + i * 3 * (size_t) h * w;
    size_t plane = (size_t) h * w, o = (size_t) sy * w + sx;
    x[p * 3 + 0] = (img[o] - m0) * range;
    x[p * 3 + 1] = (img[plane + o] - m1) * range;
    x[p * 3 + 2] = (img[2 * plane + o] - m2) * range;
  }
}

extern "C" cudaError_t
ehat_cuda_input (cudaStream_t s, const float *planar, int n, int w, int h,
    int W, int H, float m0, float m1, float m2, float range, float *x)
{
  size_t total = (size_t) n * H * W;
  input_kernel <<< ehat_blocks (total), EHAT_THREADS, 0, s >>> (planar, n, w,
      h, W, H, m0, m1, m2, range, x);
  return cudaGetLastError ();
}

__global__ void
output_kernel (const float *x, int n, int W, int H, int w, int h, float m0,
    float m1, float m2, float range, float *planar)
{
  size_t total = (size_t) n * h * w;
  GRID_STRIDE (p, total) {
    int xx = (int) (p % w);
    int y = (int) ((p / w) % h);
    size_t i = p / ((size_t) w * h);
    const float *src = x + ((i * H + y) * (size_t) W + xx) * 3;
    float *img = planar + i * 3 * (size_t) h * w;
    size_t plane = (size_t) h * w, o = (size_t) y * w + xx;
    img[o] = src[0] / range + m0;
    img[plane + o] = src[1] / range + m1;
    img[2 * plane + o] = src[2] / range + m2;
  }
}

extern "C" cudaError_t
ehat_cuda_output (cudaStream_t s, const float *x, int n, int W, int H, int w,
    int h, float m0, float m1, float m2, float range, float *planar)
{
  size_t total = (size_t) n * h * w;
  output_kernel <<< ehat_blocks (total), EHAT_THREADS, 0, s >>> (x, n, W, H,
      w, h, m0, m1, m2, range, planar);
  return cudaGetLastError ();
}

/* ---- convolution helpers ---- */

__global__ void
im2col_kernel (const float *x, int h, int w, int cin, int k, size_t p0,
    size_t np, float *col)
{
  size_t kc = (size_t) k * k * cin, total = np * kc;
  int r = k / 2;
  GRID_STRIDE (idx, total) {
    size_t pix = idx / kc;
    int rest = (int) (idx % kc);
    int t = rest / cin, ci = rest % cin;
    int ky = t / k, kx = t % k;
    size_t p = p0 + pix;
    int xx = (int) (p % w);
    int yy = (int) ((p / w) % h);
    size_t img = p / ((size_t) w * h);
    int sy = yy + ky - r, sx = xx + kx - r;
    float v = 0.0f;
    if (sy >= 0 && sy < h && sx >= 0 && sx < w)
      v = x[((img * h + sy) * w + sx) * cin + ci];
    col[idx] = v;
  }
}

extern "C" cudaError_t
ehat_cuda_im2col (cudaStream_t s, const float *x, int h, int w, int cin,
    int k, size_t p0, size_t np, float *col)
{
  size_t total = np * k * k * cin;
  im2col_kernel <<< ehat_blocks (total), EHAT_THREADS, 0, s >>> (x, h, w,
      cin, k, p0, np, col);
  return cudaGetLastError ();
}

__global__ void
bias_act_kernel (float *y, size_t rows, int c, const float *b, int act,
    const float *res, float alpha)
{
  size_t total = rows * c;
  GRID_STRIDE (i, total) {
    float v = ehat_dev_act (y[i] + b[i % c], act);
    if (res)
      v += alpha * res[i];
    y[i] = v;
  }
}

extern "C" cudaError_t
ehat_cuda_bias_act (cudaStream_t s, float *y, size_t rows, int c,
    const float *b, int act, const float *res, float alpha)
{
  size_t total = rows * c;
  bias_act_kernel <<< ehat_blocks (total), EHAT_THREADS, 0, s >>> (y, rows,
      c, b, act, res, alpha);
  return cudaGetLastError ();
}

__global__ void
bias_act_shuffle_kernel (const float *t, size_t p0, size_t np, int h, int w,
    int cout, int sh, const float *b, int act, const float *res, float alpha,
    float *y)
{
  size_t total = np * cout;
  int co = cout / (sh * sh);
  size_t ow = (size_t) w * sh, oh = (size_t) h * sh;
  GRID_STRIDE (idx, total) {
    size_t pix = idx / cout;
    int o = (int) (idx % cout);
    size_t p = p0 + pix;
    float v = ehat_dev_act (t[idx] + b[o], act);
    if (res)
      v += alpha * res[p * cout + o];
    int xx = (int) (p % w);
    int yy = (int) ((p / w) % h);
    size_t img = p / ((size_t) w * h);
    int c = o / (sh * sh), i = (o / sh) % sh, j = o % sh;
    y[((img * oh + (size_t) yy * sh + i) * ow + (size_t) xx * sh + j) * co
        + c] = v;
  }
}

extern "C" cudaError_t
ehat_cuda_bias_act_shuffle (cudaStream_t s, const float *t, size_t p0,
    size_t np, int h, int w, int cout, int shuffle, const float *b, int act,
    const float *res, float alpha, float *y)
{
  size_t total = np * cout;
  bias_act_shuffle_kernel <<< ehat_blocks (total), EHAT_THREADS, 0, s >>> (t,
      p0, np, h, w, cout, shuffle, b, act, res, alpha, y);
  return cudaGetLastError ();
}

/* ---- LayerNorm: one warp per row ---- */

__global__ void
layernorm_kernel (const float *x, size_t rows, int c, const float *g,
    const float *b, float *y)
{
  size_t row = (size_t) blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (row >= rows)
    return;
  const float *xr = x + row * c;
  float *yr = y + row * c;
  float sum = 0.0f;
  for (int j = lane; j < c; j += 32)
    sum += xr[j];
  float mean = ehat_warp_sum (sum) / c;
  float var = 0.0f;
  for (int j = lane; j < c; j += 32) {
    float d = xr[j] - mean;
    var += d * d;
  }
  var = ehat_warp_sum (var) / c;
  float inv = 1.0f / sqrtf (var + 1e-5f);
  /* each lane reads before it writes the same elements: y may be x */
  for (int j = lane; j < c; j += 32)
    yr[j] = (xr[j] - mean) * inv * g[j] + b[j];
}

extern "C" cudaError_t
ehat_cuda_layernorm (cudaStream_t s, const float *x, size_t rows, int c,
    const float *g, const float *b, float *y)
{
  const int warps = EHAT_THREADS / 32;
  size_t blocks = (rows + warps - 1) / warps;
  if (blocks == 0)
    return cudaSuccess;
  layernorm_kernel <<< (unsigned) blocks, EHAT_THREADS, 0, s >>> (x, rows, c,
      g, b, y);
  return cudaGetLastError ();
}

/* ---- axpby ---- */

__global__ void
axpby_kernel (float *y, float a, const float *x, float b, size_t n)
{
  if (b == 0.0f) {
    /* y may be uninitialised: never read it (0·NaN would be NaN) */
    GRID_STRIDE (i, n)
      y[i] = a * x[i];
  } else {
    GRID_STRIDE (i, n)
      y[i] = a * x[i] + b * y[i];
  }
}

extern "C" cudaError_t
ehat_cuda_axpby (cudaStream_t s, float *y, float a, const float *x, float b,
    size_t n)
{
  if (n == 0)
    return cudaSuccess;
  axpby_kernel <<< ehat_blocks (n), EHAT_THREADS, 0, s >>> (y, a, x, b, n);
  return cudaGetLastError ();
}

/* ---- channel attention ---- */

/* Block (32 channels × 8 row lanes), grid (channel blocks, images, row
 * splits); sums in double as the CPU does (the mean runs over up to
 * millions of rows). */
__global__ void
channel_sums_kernel (const float *v, size_t hw, int c, double *sums)
{
  __shared__ double red[8][33];
  int ch = blockIdx.x * 32 + threadIdx.x;
  int img = blockIdx.y;
  double acc = 0.0;
  if (ch < c) {
    const float *vi = v + (size_t) img * hw * c;
    for (size_t r = (size_t) blockIdx.z * 8 + threadIdx.y; r < hw;
        r += (size_t) gridDim.z * 8)
      acc += vi[r * c + ch];
  }
  red[threadIdx.y][threadIdx.x] = acc;
  __syncthreads ();
  if (threadIdx.y == 0 && ch < c) {
    for (int k = 1; k < 8; k++)
      acc += red[k][threadIdx.x];
    atomicAdd (&sums[(size_t) img * c + ch], acc);
  }
}

extern "C" cudaError_t
ehat_cuda_channel_sums (cudaStream_t s, const float *v, int n, size_t hw,
    int c, double *sums)
{
  cudaError_t e = cudaMemsetAsync (sums, 0, (size_t) n * c * sizeof (double),
      s);
  if (e != cudaSuccess)
    return e;
  size_t splits = (hw + 8 * 64 - 1) / (8 * 64);
  if (splits < 1)
    splits = 1;
  if (splits > 1024)
    splits = 1024;
  dim3 grid ((c + 31) / 32, n, (unsigned) splits), block (32, 8);
  channel_sums_kernel <<< grid, block, 0, s >>> (v, hw, c, sums);
  return cudaGetLastError ();
}

/* One block per image: mean → down → ReLU → up → sigmoid. */
__global__ void
channel_mlp_kernel (const double *sums, size_t hw, int c, const float *dw,
    const float *db, int mid, const float *uw, const float *ub, float *scale)
{
  extern __shared__ float sm[];
  float *mean = sm, *hid = sm + c;
  int img = blockIdx.x;
  for (int j = threadIdx.x; j < c; j += blockDim.x)
    mean[j] = (float) (sums[(size_t) img * c + j] / (double) hw);
  __syncthreads ();
  for (int o = threadIdx.x; o < mid; o += blockDim.x) {
    float s = db[o];
    for (int j = 0; j < c; j++)
      s += dw[(size_t) o * c + j] * mean[j];
    hid[o] = s > 0.0f ? s : 0.0f;
  }
  __syncthreads ();
  for (int o = threadIdx.x; o < c; o += blockDim.x) {
    float s = ub[o];
    for (int j = 0; j < mid; j++)
      s += uw[(size_t) o * mid + j] * hid[j];
    scale[(size_t) img * c + o] = 1.0f / (1.0f + expf (-s));
  }
}

extern "C" cudaError_t
ehat_cuda_channel_mlp (cudaStream_t s, const double *sums, int n, size_t hw,
    int c, const float *dw, const float *db, int mid, const float *uw,
    const float *ub, float *scale)
{
  size_t smem = (size_t) (c + mid) * sizeof (float);
  if (smem > 48 * 1024)
    return cudaErrorInvalidValue;
  channel_mlp_kernel <<< n, EHAT_THREADS, smem, s >>> (sums, hw, c, dw, db,
      mid, uw, ub, scale);
  return cudaGetLastError ();
}

__global__ void
channel_scale_kernel (float *v, size_t hw, int c, size_t total,
    const float *scale)
{
  size_t per_img = hw * c;
  GRID_STRIDE (i, total)
    v[i] *= scale[(i / per_img) * c + i % c];
}

extern "C" cudaError_t
ehat_cuda_channel_scale (cudaStream_t s, float *v, int n, size_t hw, int c,
    const float *scale)
{
  size_t total = (size_t) n * hw * c;
  if (total == 0)
    return cudaSuccess;
  channel_scale_kernel <<< ehat_blocks (total), EHAT_THREADS, 0, s >>> (v, hw,
      c, total, scale);
  return cudaGetLastError ();
}

/* ---- DANet CAM softmax: one block per row ---- */

__global__ void
gram_softmax_kernel (float *e, int c, float gamma)
{
  __shared__ float red[32];
  float *er = e + (size_t) blockIdx.x * c;
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < c; j += blockDim.x)
    mx = fmaxf (mx, er[j]);
  mx = ehat_block_max (mx, red);
  /* softmax of (mx − e): its maximum is mx − min(e) */
  float mx2 = -INFINITY;
  for (int j = threadIdx.x; j < c; j += blockDim.x)
    mx2 = fmaxf (mx2, mx - er[j]);
  mx2 = ehat_block_max (mx2, red);
  float sum = 0.0f;
  for (int j = threadIdx.x; j < c; j += blockDim.x)
    sum += expf ((mx - er[j]) - mx2);
  sum = ehat_block_sum (sum, red);
  float k = gamma / sum;
  for (int j = threadIdx.x; j < c; j += blockDim.x)
    er[j] = expf ((mx - er[j]) - mx2) * k;
}

extern "C" cudaError_t
ehat_cuda_gram_softmax (cudaStream_t s, float *e, int n, int c, float gamma)
{
  size_t rows = (size_t) n * c;
  if (rows == 0)
    return cudaSuccess;
  gram_softmax_kernel <<< (unsigned) rows, 128, 0, s >>> (e, c, gamma);
  return cudaGetLastError ();
}
