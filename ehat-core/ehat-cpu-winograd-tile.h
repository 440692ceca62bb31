/* The transforms of ehat-cpu-winograd.c on vectors of VL channels,
 * included once per vector width: the includer defines VL, TILE (name)
 * (the instance's name of a function), TILE_FN and TILE_INLINE (their
 * attributes).  16 lanes make a zmm of the AVX-512 clone; on AVX2 they
 * stayed in memory (GCC keeps vectors wider than the registers there), so
 * AVX2 machines run the 8-lane instance. */

typedef float TILE (vec) __attribute__ ((vector_size (4 * VL), aligned (4)));
#define vf TILE (vec)

/* The nc ≤ VL floats at p, the lanes past them zero (through pad). */
TILE_INLINE vf
TILE (load_vec) (const float *p, int nc, float *restrict pad)
{
  if (nc == VL)
    return *(const vf *) p;
  memcpy (pad, p, nc * sizeof (float));
  memset (pad + nc, 0, (VL - nc) * sizeof (float));
  return *(const vf *) pad;
}

TILE_INLINE void
TILE (store_vec) (float *p, vf v, int nc, float *restrict pad)
{
  if (nc == VL) {
    *(vf *) p = v;
  } else {
    *(vf *) pad = v;
    memcpy (p, pad, nc * sizeof (float));
  }
}

/* Input TILE (pixel) (sy, sx), channels c0.., zero outside the image. */
TILE_INLINE vf
TILE (pixel) (const float *x, int h, int w, int cin, int sy, int sx, int c0,
    int nc, float *restrict pad)
{
  if (sy < 0 || sy >= h || sx < 0 || sx >= w)
    return (vf) { 0 };
  return TILE (load_vec) (x + ((gsize) sy * w + sx) * cin + c0, nc, pad);
}

/* The input transform of tile (y0, x0) (its top-left input pixel, −1
 * based) into v: 36 rows of cin, one per product.  work: WORK_FLOATS
 * of scratch (36 vectors, a pad). */
TILE_FN void
TILE (input_tile) (const float *restrict x, int h, int w, int cin, int y0,
    int x0, float *restrict v, float *restrict work)
{
  vf *restrict t = (vf *) work;
  float *restrict pad = work + 36 * VL;

  for (int c0 = 0; c0 < cin; c0 += VL) {
    int nc = MIN (VL, cin - c0);

    for (int i = 0; i < 6; i++) {
      int sy = y0 + i;
      vf d0, d1, d2, d3, d4, d5, e0, e1, e2, e3, e4, e5;
      d0 = TILE (pixel) (x, h, w, cin, sy, x0, c0, nc, pad);
      d1 = TILE (pixel) (x, h, w, cin, sy, x0 + 1, c0, nc, pad);
      d2 = TILE (pixel) (x, h, w, cin, sy, x0 + 2, c0, nc, pad);
      d3 = TILE (pixel) (x, h, w, cin, sy, x0 + 3, c0, nc, pad);
      d4 = TILE (pixel) (x, h, w, cin, sy, x0 + 4, c0, nc, pad);
      d5 = TILE (pixel) (x, h, w, cin, sy, x0 + 5, c0, nc, pad);
      BT6 (e, d);
      t[i * 6] = e0;
      t[i * 6 + 1] = e1;
      t[i * 6 + 2] = e2;
      t[i * 6 + 3] = e3;
      t[i * 6 + 4] = e4;
      t[i * 6 + 5] = e5;
    }
    for (int j = 0; j < 6; j++) {
      vf d0 = t[j], d1 = t[6 + j], d2 = t[12 + j], d3 = t[18 + j];
      vf d4 = t[24 + j], d5 = t[30 + j], e0, e1, e2, e3, e4, e5;
      float *vj = v + j * cin + c0;
      BT6 (e, d);
      TILE (store_vec) (vj, e0, nc, pad);
      TILE (store_vec) (vj + 6 * cin, e1, nc, pad);
      TILE (store_vec) (vj + 12 * cin, e2, nc, pad);
      TILE (store_vec) (vj + 18 * cin, e3, nc, pad);
      TILE (store_vec) (vj + 24 * cin, e4, nc, pad);
      TILE (store_vec) (vj + 30 * cin, e5, nc, pad);
    }
  }
}

/* K = VL/4 channels of each of the four pixels per vector (below) */
#define K (VL / 4)

/* Lanes 4k + q → lane K·q + k: the permute of store_shuffled2, in each
 * compiler's spelling (clang builds the fuzzers). */
#if VL == 16
#define BY_Q_LANES 0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15
#elif VL == 8
#define BY_Q_LANES 0, 4, 1, 5, 2, 6, 3, 7
#else
#define BY_Q_LANES 0, 1, 2, 3
#endif
#if defined(__clang__)
#define BY_Q(v) __builtin_shufflevector (v, v, BY_Q_LANES)
#else
typedef gint32 TILE (ivec) __attribute__ ((vector_size (4 * VL)));
#define BY_Q(v) __builtin_shuffle (v, (TILE (ivec)) { BY_Q_LANES })
#endif

/* A vector of channels c0.. of output (py, px) shuffled by 2: lane 4k + q
 * is channel c0/4 + k of TILE (pixel) (2py + q/2, 2px + q%2), so the lanes of
 * each q, gathered by one permute, are nc/4 consecutive channels there
 * (the ×2 and ×4 models' upsampling; other factors go through blk). */
TILE_INLINE void
TILE (store_shuffled2) (float *y, int w, int co, int py, int px, int c0, vf v,
    int nc, float *restrict pad)
{
  gsize ow = (gsize) w * 2;
  float *y0 = y + ((gsize) py * 2 * ow + (gsize) px * 2) * co + c0 / 4;
  float *y1 = y0 + ow * co;

  *(vf *) pad = BY_Q (v);
  if (nc == VL) {
    /* constant sizes: four moves of K floats */
    memcpy (y0, pad, K * sizeof (float));
    memcpy (y0 + co, pad + K, K * sizeof (float));
    memcpy (y1, pad + 2 * K, K * sizeof (float));
    memcpy (y1 + co, pad + 3 * K, K * sizeof (float));
  } else {
    memcpy (y0, pad, nc / 4 * sizeof (float));
    memcpy (y0 + co, pad + K, nc / 4 * sizeof (float));
    memcpy (y1, pad + 2 * K, nc / 4 * sizeof (float));
    memcpy (y1 + co, pad + 3 * K, nc / 4 * sizeof (float));
  }
}

/* Output (oy0 + i, ox0 + j) of a tile, channels c0..: bias, activation,
 * residual, then into y (shuffled on the way by 2), or for other shuffles
 * into blk (16 rows of cout) first. */
TILE_INLINE void
TILE (finish) (const OutArgs *o, vf v, vf bias, int oy0, int ox0, int i, int j,
    int c0, int nc, float *y, float *blk, float *restrict pad)
{
  int cout = o->cout;
  gsize p = (gsize) (oy0 + i) * o->w + ox0 + j;

  v += bias;
  if (o->act != EHAT_ACT_NONE) {
#if VL == EHAT_VL
    v = (vf) ehat_vec_activate ((EhatVec) v, o->act);
#else
    *(vf *) pad = v;
    for (int l = 0; l < VL; l += EHAT_VL)
      ehat_vec_store (pad + l, ehat_vec_activate (ehat_vec_load (pad + l),
              o->act));
    v = *(const vf *) pad;
#endif
  }
  if (o->res)
    v += o->alpha * TILE (load_vec) (o->res + p * cout + c0, nc, pad);
  if (o->shuffle == 1)
    TILE (store_vec) (y + p * cout + c0, v, nc, pad);
  else if (o->shuffle == 2)
    TILE (store_shuffled2) (y, o->w, cout / 4, oy0 + i, ox0 + j, c0, v, nc,
        pad);
  else
    TILE (store_vec) (blk + (i * 4 + j) * cout + c0, v, nc, pad);
}

/* The output transform of a tile's products m (36 rows of cout) and its
 * outputs inside the image.  work: as input_tile's. */
TILE_FN void
TILE (output_tile) (const float *restrict m, const OutArgs *o, int oy0, int ox0,
    float *y, float *blk, float *restrict work)
{
  vf *restrict r = (vf *) work;
  float *restrict pad = work + 36 * VL;
  int cout = o->cout;
  int rows = MIN (4, o->h - oy0), cols = MIN (4, o->w - ox0);

  for (int c0 = 0; c0 < cout; c0 += VL) {
    int nc = MIN (VL, cout - c0);
    vf bias = o->bias ? TILE (load_vec) (o->bias + c0, nc, pad) : (vf) { 0 };

    for (int i = 0; i < 6; i++) {
      const float *mi = m + i * 6 * cout + c0;
      vf m0, m1, m2, m3, m4, m5, s0, s1, s2, s3;
      m0 = TILE (load_vec) (mi, nc, pad);
      m1 = TILE (load_vec) (mi + cout, nc, pad);
      m2 = TILE (load_vec) (mi + 2 * cout, nc, pad);
      m3 = TILE (load_vec) (mi + 3 * cout, nc, pad);
      m4 = TILE (load_vec) (mi + 4 * cout, nc, pad);
      m5 = TILE (load_vec) (mi + 5 * cout, nc, pad);
      AT4 (s, m);
      r[i * 4] = s0;
      r[i * 4 + 1] = s1;
      r[i * 4 + 2] = s2;
      r[i * 4 + 3] = s3;
    }
    for (int j = 0; j < cols; j++) {
      vf m0 = r[j], m1 = r[4 + j], m2 = r[8 + j], m3 = r[12 + j];
      vf m4 = r[16 + j], m5 = r[20 + j], s0, s1, s2, s3;
      AT4 (s, m);
      TILE (finish) (o, s0, bias, oy0, ox0, 0, j, c0, nc, y, blk, pad);
      if (rows > 1)
        TILE (finish) (o, s1, bias, oy0, ox0, 1, j, c0, nc, y, blk, pad);
      if (rows > 2)
        TILE (finish) (o, s2, bias, oy0, ox0, 2, j, c0, nc, y, blk, pad);
      if (rows > 3)
        TILE (finish) (o, s3, bias, oy0, ox0, 3, j, c0, nc, y, blk, pad);
    }
  }
  if (o->shuffle > 2)
    shuffle_tile (blk, o, oy0, ox0, rows, cols, y);
}

#undef vf
#undef K
#undef BY_Q_LANES
#undef BY_Q
