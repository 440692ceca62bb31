/* Element-wise and reduction kernels of the CUDA backend: input/output
 * conversion, im2col and conv/linear epilogues (bias, activation, residual,
 * pixel shuffle), LayerNorm, axpby, channel attention, the CAM softmax.
 * Activations of storage type T (ehat-cuda-common.cuh), fp32 arithmetic;
 * semantics as the CPU backend (ehat-backend-cpu.c). */
#include "ehat-cuda-common.cuh"

/* ---- weight conversion ---- */

template <typename T>
__global__ void
convert_kernel (const float *src, size_t n, T *dst)
{
  GRID_STRIDE (i, n)
    st (dst + i, src[i]);
}

extern "C" cudaError_t
ehat_cuda_convert (cudaStream_t s, const float *src, size_t n, int dt,
    void *dst)
{
  if (n == 0)
    return cudaSuccess;
  EHAT_DISPATCH (dt, convert_kernel<T> <<< ehat_blocks (n), EHAT_THREADS, 0,
          s >>> (src, n, (T *) dst));
  return cudaGetLastError ();
}

template <typename T>
__global__ void
convert_pad_kernel (const float *src, int rows, int cols, int cols_p,
    size_t total, T *dst)
{
  GRID_STRIDE (i, total) {
    int r = (int) (i / cols_p), j = (int) (i % cols_p);
    st (dst + i, r < rows && j < cols ? src[(size_t) r * cols + j] : 0.0f);
  }
}

extern "C" cudaError_t
ehat_cuda_convert_pad (cudaStream_t s, const float *src, int rows, int cols,
    int rows_p, int cols_p, int dt, void *dst)
{
  size_t total = (size_t) rows_p * cols_p;
  if (total == 0)
    return cudaSuccess;
  EHAT_DISPATCH (dt, convert_pad_kernel<T> <<< ehat_blocks (total),
          EHAT_THREADS, 0, s >>> (src, rows, cols, cols_p, total, (T *) dst));
  return cudaGetLastError ();
}

/* ---- input / output ---- */

template <typename T>
__global__ void
input_kernel (const float *planar, int n, int w, int h, int W, int H,
    float m0, float m1, float m2, float range, T *x)
{
  size_t total = (size_t) n * H * W;
  GRID_STRIDE (p, total) {
    int xx = (int) (p % W);
    int y = (int) ((p / W) % H);
    size_t i = p / ((size_t) W * H);
    int sx = ehat_dev_reflect (xx, w), sy = ehat_dev_reflect (y, h);
    const float *img = planar + i * 3 * (size_t) h * w;
    size_t plane = (size_t) h * w, o = (size_t) sy * w + sx;
    st (x + p * 3 + 0, (img[o] - m0) * range);
    st (x + p * 3 + 1, (img[plane + o] - m1) * range);
    st (x + p * 3 + 2, (img[2 * plane + o] - m2) * range);
  }
}

extern "C" cudaError_t
ehat_cuda_input (cudaStream_t s, int dt, const float *planar, int n, int w,
    int h, int W, int H, float m0, float m1, float m2, float range, void *x)
{
  size_t total = (size_t) n * H * W;
  EHAT_DISPATCH (dt, input_kernel<T> <<< ehat_blocks (total), EHAT_THREADS,
          0, s >>> (planar, n, w, h, W, H, m0, m1, m2, range, (T *) x));
  return cudaGetLastError ();
}

template <typename T>
__global__ void
output_kernel (const T *x, int n, int W, int H, int w, int h, float m0,
    float m1, float m2, float range, float *planar)
{
  size_t total = (size_t) n * h * w;
  GRID_STRIDE (p, total) {
    int xx = (int) (p % w);
    int y = (int) ((p / w) % h);
    size_t i = p / ((size_t) w * h);
    const T *src = x + ((i * H + y) * (size_t) W + xx) * 3;
    float *img = planar + i * 3 * (size_t) h * w;
    size_t plane = (size_t) h * w, o = (size_t) y * w + xx;
    img[o] = ld (src) / range + m0;
    img[plane + o] = ld (src + 1) / range + m1;
    img[2 * plane + o] = ld (src + 2) / range + m2;
  }
}

extern "C" cudaError_t
ehat_cuda_output (cudaStream_t s, int dt, const void *x, int n, int W, int H,
    int w, int h, float m0, float m1, float m2, float range, float *planar)
{
  size_t total = (size_t) n * h * w;
  EHAT_DISPATCH (dt, output_kernel<T> <<< ehat_blocks (total), EHAT_THREADS,
          0, s >>> ((const T *) x, n, W, H, w, h, m0, m1, m2, range,
              planar));
  return cudaGetLastError ();
}

/* ---- convolution helpers ---- */

/* One (pixel, tap) pair of im2col is a contiguous run of cin channels in
 * x and in col, so whole runs move as vectors V (the widest of 16, 8, 4 or
 * 2 bytes that divides the run and the buffers' alignment), nv per run:
 * the index arithmetic is paid per vector, not per element, and the copy
 * runs at memory bandwidth. */
template <typename V>
__global__ void
im2col_kernel (const V *__restrict__ x, int h, int w, int nv, int k,
    size_t p0, unsigned np, unsigned per_pix, V *__restrict__ col)
{
  const unsigned data = (unsigned) (k * k * nv);     /* then zeros */
  const unsigned total = np * per_pix;
  const int r = k / 2;
  for (unsigned idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total;
      idx += gridDim.x * blockDim.x) {
    unsigned pix = idx / per_pix, rest = idx - pix * per_pix;
    if (rest >= data) {
      col[idx] = V {};
      continue;
    }
    unsigned t = rest / nv, v = rest - t * nv;
    int ky = (int) t / k, kx = (int) t - ky * k;
    unsigned p = (unsigned) p0 + pix, q = p / w;
    int xx = (int) (p - q * w), yy = (int) (q % h);
    size_t img = q / h;
    int sy = yy + ky - r, sx = xx + kx - r;
    V val = {};
    if (sy >= 0 && sy < h && sx >= 0 && sx < w)
      val = x[((img * h + sy) * w + sx) * nv + v];
    col[idx] = val;
  }
}

template <typename V>
static void
im2col_launch (cudaStream_t s, const void *x, int h, int w, int vb, size_t run,
    int k, size_t p0, size_t np, size_t row, void *col)
{
  unsigned per_pix = (unsigned) (row / vb);
  size_t total = np * per_pix;
  im2col_kernel<V> <<< ehat_blocks (total), EHAT_THREADS, 0, s >>> (
      (const V *) x, h, w, (int) (run / vb), k, p0, (unsigned) np, per_pix,
      (V *) col);
}

extern "C" cudaError_t
ehat_cuda_im2col (cudaStream_t s, int dt, const void *x, int h, int w,
    int cin, int k, size_t p0, size_t np, int ldc, void *col)
{
  size_t es = dt == EHAT_CUDA_F32 ? 4 : 2;
  size_t run = (size_t) cin * es, row = (size_t) ldc * es;
  /* the vector must divide a run, the padded row (whose zero tail is then
   * whole vectors) and both buffers' alignment */
  uintptr_t all = (uintptr_t) x | (uintptr_t) col | run | row;

  if (ldc < k * k * cin || np * row / 2 >= 0x80000000u
      || p0 + np >= 0x80000000u)
    return cudaErrorInvalidValue;       /* the backend bands far below */
  if (all % 16 == 0)
    im2col_launch<uint4> (s, x, h, w, 16, run, k, p0, np, row, col);
  else if (all % 8 == 0)
    im2col_launch<uint2> (s, x, h, w, 8, run, k, p0, np, row, col);
  else if (all % 4 == 0)
    im2col_launch<unsigned> (s, x, h, w, 4, run, k, p0, np, row, col);
  else
    im2col_launch<unsigned short> (s, x, h, w, 2, run, k, p0, np, row, col);
  return cudaGetLastError ();
}

/* Row-wise kernels run a warp per row, lanes over its channels: no
 * per-element division (64-bit `i % c` cost more than the memory traffic
 * of these passes; the element-wise kernels below divide in 32 bits). */
#define ROWS_PER_BLOCK (EHAT_THREADS / 32)
#define FOR_EACH_ROW(row, rows) \
  for (size_t row = (size_t) blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5); \
      row < (rows); row += (size_t) gridDim.x * ROWS_PER_BLOCK)

static inline unsigned
row_blocks (size_t rows)
{
  return ehat_blocks (rows * 32);
}

/* bias_act and pad_rows go element by element, with 32-bit indices
 * where they fit: a warp per row keeps too few bytes in flight on rows
 * of a few hundred fp16 channels (channel_scale_add below measured 3×
 * faster so on an H100).  Every element of y (and of res, which may be
 * y) is read and written by one thread, so the passes may run in place;
 * t may be y only with ldt = c. */
template <typename T, typename I>
__global__ void
bias_act_kernel (const T *t, I ldt, T *y, I total, I c, const float *b,
    int act, const T *res, float alpha)
{
  for (I i = (I) blockIdx.x * blockDim.x + threadIdx.x; i < total;
      i += (I) gridDim.x * blockDim.x) {
    I row = i / c, j = i - row * c;
    float v = ehat_dev_act (ld (t + row * ldt + j) + (b ? b[j] : 0.0f), act);
    if (res)
      v += alpha * ld (res + i);
    st (y + i, v);
  }
}

extern "C" cudaError_t
ehat_cuda_bias_act (cudaStream_t s, int dt, const void *t, int ldt, void *y,
    size_t rows, int c, const float *b, int act, const void *res,
    float alpha)
{
  size_t total = rows * c;
  if (total == 0)
    return cudaSuccess;
  if (t == y && ldt != c)
    return cudaErrorInvalidValue;
  if (rows * (size_t) (ldt > c ? ldt : c) < 0xffffffffu)
    EHAT_DISPATCH (dt, bias_act_kernel<T, unsigned> <<< ehat_blocks (total),
            EHAT_THREADS, 0, s >>> ((const T *) t, (unsigned) ldt, (T *) y,
                (unsigned) total, (unsigned) c, b, act, (const T *) res,
                alpha))
  else
    EHAT_DISPATCH (dt, bias_act_kernel<T, size_t> <<< ehat_blocks (total),
            EHAT_THREADS, 0, s >>> ((const T *) t, (size_t) ldt, (T *) y,
                total, (size_t) c, b, act, (const T *) res, alpha))
  return cudaGetLastError ();
}

template <typename T, typename I>
__global__ void
pad_rows_kernel (const T *x, I total, I c, I ldp, T *dst)
{
  for (I i = (I) blockIdx.x * blockDim.x + threadIdx.x; i < total;
      i += (I) gridDim.x * blockDim.x) {
    I row = i / ldp, j = i - row * ldp;
    dst[i] = j < c ? x[row * c + j] : T (0.0f);
  }
}

extern "C" cudaError_t
ehat_cuda_pad_rows (cudaStream_t s, int dt, const void *x, size_t rows,
    int c, int ldp, void *dst)
{
  size_t total = rows * ldp;
  if (total == 0)
    return cudaSuccess;
  if (total < 0xffffffffu)
    EHAT_DISPATCH (dt, pad_rows_kernel<T, unsigned> <<< ehat_blocks (total),
            EHAT_THREADS, 0, s >>> ((const T *) x, (unsigned) total,
                (unsigned) c, (unsigned) ldp, (T *) dst))
  else
    EHAT_DISPATCH (dt, pad_rows_kernel<T, size_t> <<< ehat_blocks (total),
            EHAT_THREADS, 0, s >>> ((const T *) x, total, (size_t) c,
                (size_t) ldp, (T *) dst))
  return cudaGetLastError ();
}

template <typename T>
__global__ void
bias_act_shuffle_kernel (const T *t, int ldt, size_t p0, size_t np, int h,
    int w,
    int cout, int sh, const float *b, int act, const T *res, float alpha,
    T *y)
{
  const int lane = threadIdx.x & 31, ss = sh * sh;
  int co = cout / ss;
  size_t ow = (size_t) w * sh, oh = (size_t) h * sh;
  FOR_EACH_ROW (pix, np) {
    size_t p = p0 + pix;
    int xx = (int) (p % w);
    int yy = (int) ((p / w) % h);
    size_t img = p / ((size_t) w * h);
    T *base = y + ((img * oh + (size_t) yy * sh) * ow + (size_t) xx * sh) * co;
    for (int o = lane; o < cout; o += 32) {
      float v = ehat_dev_act (ld (t + pix * ldt + o) + (b ? b[o] : 0.0f),
          act);
      if (res)
        v += alpha * ld (res + p * cout + o);
      int c = o / ss, i = (o / sh) % sh, j = o % sh;
      st (base + ((size_t) i * ow + j) * co + c, v);
    }
  }
}

extern "C" cudaError_t
ehat_cuda_bias_act_shuffle (cudaStream_t s, int dt, const void *t, int ldt,
    size_t p0, size_t np, int h, int w, int cout, int shuffle,
    const float *b, int act, const void *res, float alpha, void *y)
{
  size_t total = np * cout;
  if (total == 0)
    return cudaSuccess;
  EHAT_DISPATCH (dt, bias_act_shuffle_kernel<T> <<< row_blocks (np),
          EHAT_THREADS, 0, s >>> ((const T *) t, ldt, p0, np, h, w, cout,
              shuffle,
              b, act, (const T *) res, alpha, (T *) y));
  return cudaGetLastError ();
}

/* ---- LayerNorm: one warp per row ---- */

template <typename T>
__global__ void
layernorm_kernel (const T *x, size_t rows, int c, const float *g,
    const float *b, T *y)
{
  size_t row = (size_t) blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (row >= rows)
    return;
  const T *xr = x + row * c;
  T *yr = y + row * c;
  float sum = 0.0f;
  for (int j = lane; j < c; j += 32)
    sum += ld (xr + j);
  float mean = ehat_warp_sum (sum) / c;
  float var = 0.0f;
  for (int j = lane; j < c; j += 32) {
    float d = ld (xr + j) - mean;
    var += d * d;
  }
  var = ehat_warp_sum (var) / c;
  float inv = 1.0f / sqrtf (var + 1e-5f);
  /* each lane reads before it writes the same elements: y may be x */
  for (int j = lane; j < c; j += 32)
    st (yr + j, (ld (xr + j) - mean) * inv * g[j] + b[j]);
}

extern "C" cudaError_t
ehat_cuda_layernorm (cudaStream_t s, int dt, const void *x, size_t rows,
    int c, const float *g, const float *b, void *y)
{
  const int warps = EHAT_THREADS / 32;
  size_t blocks = (rows + warps - 1) / warps;
  if (blocks == 0)
    return cudaSuccess;
  EHAT_DISPATCH (dt, layernorm_kernel<T> <<< (unsigned) blocks, EHAT_THREADS,
          0, s >>> ((const T *) x, rows, c, g, b, (T *) y));
  return cudaGetLastError ();
}

/* ---- axpby ---- */

template <typename T>
__global__ void
axpby_kernel (T *y, float a, const T *x, float b, size_t n)
{
  if (b == 0.0f) {
    /* y may be uninitialised: never read it (0·NaN would be NaN) */
    GRID_STRIDE (i, n)
      st (y + i, a * ld (x + i));
  } else {
    GRID_STRIDE (i, n)
      st (y + i, a * ld (x + i) + b * ld (y + i));
  }
}

extern "C" cudaError_t
ehat_cuda_axpby (cudaStream_t s, int dt, void *y, float a, const void *x,
    float b, size_t n)
{
  if (n == 0)
    return cudaSuccess;
  EHAT_DISPATCH (dt, axpby_kernel<T> <<< ehat_blocks (n), EHAT_THREADS, 0,
          s >>> ((T *) y, a, (const T *) x, b, n));
  return cudaGetLastError ();
}

/* ---- channel attention ---- */

/* Row parts each image's sums are split into: a function of hw alone, so
 * that an image's mean does not depend on the batch it came in. */
extern "C" size_t
ehat_cuda_channel_sum_parts (size_t hw)
{
  size_t parts = (hw + 8 * 64 - 1) / (8 * 64);
  return parts < 1 ? 1 : parts > 1024 ? 1024 : parts;
}

/* Block (32 channels × 8 row lanes), grid (channel blocks, images, row
 * parts); sums in double as the CPU does (the mean runs over up to
 * millions of rows).  Each block writes its part's sums, which
 * channel_mlp_kernel adds in a fixed order: atomics would add them in
 * whatever order the blocks finish, and the same tile could round to
 * another float from one run (or one batch) to the next. */
template <typename T>
__global__ void
channel_sums_kernel (const T *v, size_t hw, int c, double *parts)
{
  __shared__ double red[8][33];
  int ch = blockIdx.x * 32 + threadIdx.x;
  int img = blockIdx.y;
  double acc = 0.0;
  if (ch < c) {
    const T *vi = v + (size_t) img * hw * c;
    for (size_t r = (size_t) blockIdx.z * 8 + threadIdx.y; r < hw;
        r += (size_t) gridDim.z * 8)
      acc += ld (vi + r * c + ch);
  }
  red[threadIdx.y][threadIdx.x] = acc;
  __syncthreads ();
  if (threadIdx.y == 0 && ch < c) {
    for (int k = 1; k < 8; k++)
      acc += red[k][threadIdx.x];
    parts[((size_t) img * gridDim.z + blockIdx.z) * c + ch] = acc;
  }
}

extern "C" cudaError_t
ehat_cuda_channel_sums (cudaStream_t s, int dt, const void *v, int n,
    size_t hw, int c, double *parts)
{
  dim3 grid ((c + 31) / 32, n, (unsigned) ehat_cuda_channel_sum_parts (hw)),
      block (32, 8);
  EHAT_DISPATCH (dt, channel_sums_kernel<T> <<< grid, block, 0, s >>> (
          (const T *) v, hw, c, parts));
  return cudaGetLastError ();
}

/* One block per image: mean (its parts added in order) → down → ReLU → up
 * → sigmoid. */
__global__ void
channel_mlp_kernel (const double *parts, size_t n_parts, size_t hw, int c,
    const float *dw, const float *db, int mid, const float *uw,
    const float *ub, float *scale)
{
  extern __shared__ float sm[];
  float *mean = sm, *hid = sm + c;
  int img = blockIdx.x;
  const double *pi = parts + (size_t) img * n_parts * c;
  for (int j = threadIdx.x; j < c; j += blockDim.x) {
    double sum = 0.0;
    for (size_t z = 0; z < n_parts; z++)
      sum += pi[z * c + j];
    mean[j] = (float) (sum / (double) hw);
  }
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
ehat_cuda_channel_mlp (cudaStream_t s, const double *parts, int n, size_t hw,
    int c, const float *dw, const float *db, int mid, const float *uw,
    const float *ub, float *scale)
{
  size_t smem = (size_t) (c + mid) * sizeof (float);
  if (smem > 48 * 1024)
    return cudaErrorInvalidValue;
  channel_mlp_kernel <<< n, EHAT_THREADS, smem, s >>> (parts,
      ehat_cuda_channel_sum_parts (hw), hw, c, dw, db, mid, uw, ub, scale);
  return cudaGetLastError ();
}

/* Element-wise with 32-bit index arithmetic: on an H100 (HAT-L, 480×272,
 * fp16) channel attention took 37 ms a frame with a warp per row here and
 * 12 ms so (rows of 180 half-precision channels keep too few bytes in
 * flight per warp).  bias_act and pad_rows take this form too (not yet
 * timed); the shuffle epilogue, with a division per output coordinate,
 * still runs a warp per row. */
/* t = w1·t + alpha·(v·scale + w0·x0): CAB's scaling with the sums around
 * it (channel_attention_add), in one pass and one rounding; x0 may be
 * NULL, t is not read when w1 = 0, t may be v (the plain scaling). */
template <typename T, typename I>
__global__ void
channel_scale_add_kernel (const T *v, I per_img, I c, I total,
    const float *scale, float w0, const T *x0, float alpha, float w1, T *t)
{
  for (I i = (I) blockIdx.x * blockDim.x + threadIdx.x; i < total;
      i += (I) gridDim.x * blockDim.x) {
    I img = i / per_img, j = (i - img * per_img) % c;
    float a = ld (v + i) * scale[img * c + j];
    if (x0)
      a += w0 * ld (x0 + i);
    a *= alpha;
    if (w1 != 0.0f)
      a += w1 * ld (t + i);
    st (t + i, a);
  }
}

extern "C" cudaError_t
ehat_cuda_channel_scale_add (cudaStream_t s, int dt, const void *v, int n,
    size_t hw, int c, const float *scale, float w0, const void *x0,
    float alpha, float w1, void *t)
{
  size_t total = (size_t) n * hw * c;
  if (total == 0)
    return cudaSuccess;
  /* 32-bit indices where they fit (3× faster, above) */
  if (total < 0xffffffffu)
    EHAT_DISPATCH (dt, channel_scale_add_kernel<T, unsigned>
        <<< ehat_blocks (total), EHAT_THREADS, 0, s >>> ((const T *) v,
            (unsigned) (hw * c), (unsigned) c, (unsigned) total, scale, w0,
            (const T *) x0, alpha, w1, (T *) t))
  else
    EHAT_DISPATCH (dt, channel_scale_add_kernel<T, size_t>
        <<< ehat_blocks (total), EHAT_THREADS, 0, s >>> ((const T *) v,
            hw * c, (size_t) c, total, scale, w0, (const T *) x0, alpha, w1,
            (T *) t))
  return cudaGetLastError ();
}

extern "C" cudaError_t
ehat_cuda_channel_scale (cudaStream_t s, int dt, void *v, int n, size_t hw,
    int c, const float *scale)
{
  return ehat_cuda_channel_scale_add (s, dt, v, n, hw, c, scale, 0.0f, NULL,
      1.0f, 0.0f, v);
}

/* ---- DANet CAM softmax: one block per row ---- */

template <typename T>
__global__ void
gram_softmax_kernel (const float *e, int c, float gamma, T *a)
{
  __shared__ float red[32];
  const float *er = e + (size_t) blockIdx.x * c;
  T *ar = a + (size_t) blockIdx.x * c;
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
  /* every read of the row is done (the block sum synchronised): a may
   * be e */
  for (int j = threadIdx.x; j < c; j += blockDim.x)
    st (ar + j, expf ((mx - er[j]) - mx2) * k);
}

extern "C" cudaError_t
ehat_cuda_gram_softmax (cudaStream_t s, int dt, const float *e, int n, int c,
    float gamma, void *a)
{
  size_t rows = (size_t) n * c;
  if (rows == 0)
    return cudaSuccess;
  EHAT_DISPATCH (dt, gram_softmax_kernel<T> <<< (unsigned) rows, 128, 0,
          s >>> (e, c, gamma, (T *) a));
  return cudaGetLastError ();
}
