/* Products with weight-only quantized (or float32) matrices and float32 activations: y (m, n) = x (m, k) @ W^T.
 *
 * Why ours: PyTorch's CPU kernels for int8/int4 weights take bfloat16 activations, which a CPU without native
 * bfloat16 (AVX2) converts to and from at every layer, and at one to a few rows (decoding) they run far below
 * the memory's speed. Here, for a few rows (decoding), each weight row is read from memory once per call and
 * dequantized in registers for every two rows of x. From 9 (int4, float32) or 17 (int8) rows, where that reads each
 * weight too often, weight rows are dequantized a block at a time into a small buffer that stays in the CPU's
 * cache and multiplied from there with every row of x. For many rows (prefill) `*_dequantize` writes float32
 * weights once and the caller multiplies them with a float32 GEMM. int8 and int4 weights at a few rows, on
 * AVX2 CPUs, multiply int8 activations instead (below).
 *
 * Formats (tinythink/model/quantize.py), and float32 weights (n, k), for the kernels decode_layers.c runs:
 *   int8: w (n, k) int8, scales (n,) bfloat16: W[r][j] = w[r][j] * scales[r]
 *   int4: w (n, k / 2) uint8, input 2i in the high nibble and 2i + 1 in the low one; scales_mins (k / group, n, 2)
 *         bfloat16, (scale, minimum) per group of `group` inputs: W[r][j] = code * scale + minimum
 * x and y are contiguous float32. Built with -O3 -ffast-math -march=native -fopenmp at first use
 * (tinythink/model/native.py); GCC's vector extensions lower to AVX2 here, to narrower units elsewhere.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>

#include "bfloat16.h"

/* int8 and int4 products of a few rows against int8 activations (below); quantized_matmul.py's check switches
 * it off to compare the float path, then on */
static int int8_activations = 1;
void set_int8_activations(int on) { int8_activations = on; }

typedef float v8f __attribute__((vector_size(32), aligned(4)));

#define TILE 2 /* rows of x multiplied with each dequantized piece of a weight row (4: slower, registers spill) */

/* A matrix W (n, k) in one of the formats above: bits 32 (float32; no scales), 8 or 4 */
typedef struct {
    const void *weight;
    const uint16_t *scales;
    int64_t n, k, bits, group;
} Weights;

static inline v8f load(const float *p) { return *(const v8f *)p; }
static inline void store(float *p, v8f v) { *(v8f *)p = v; }

/* 8 bytes widened to 8 floats: signed (int8 weights), or one nibble of each (int4). GCC's generic conversion
 * from an 8-byte vector goes byte by byte, so AVX2 gets its widening instructions. */
#if defined(__AVX2__)
#include <immintrin.h>
static inline v8f int8s(const int8_t *p) {
    return (v8f)_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}
static inline void nibbles(const uint8_t *p, v8f *high, v8f *low) {
    __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
    *high = (v8f)_mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4));
    *low = (v8f)_mm256_cvtepi32_ps(_mm256_and_si256(b, _mm256_set1_epi32(15)));
}
#else
static inline v8f int8s(const int8_t *p) {
    v8f r;
    for (int i = 0; i < 8; i++) r[i] = p[i];
    return r;
}
static inline void nibbles(const uint8_t *p, v8f *high, v8f *low) {
    for (int i = 0; i < 8; i++) {
        (*high)[i] = p[i] >> 4;
        (*low)[i] = p[i] & 15;
    }
}
#endif

static inline float hsum(v8f v) {
    float s = 0.0f;
    for (int i = 0; i < 8; i++) s += v[i];
    return s;
}

/* ---- a few rows of x: weights dequantized in registers */

/* 8 weights from j on, float32 or int8 (bits constant where inlined, so each kind gets its own loop) */
static inline v8f weights8(const void *w, int bits, int64_t j) {
    return bits == 32 ? load((const float *)w + j) : int8s((const int8_t *)w + j);
}

/* one weight row (k inputs, float32 or int8) against a tile of mt rows of x (k apart) -> y[t * n] */
static inline void dense_row(const float *x, int64_t k, int mt, const void *w, int bits, float scale, float *y,
                             int64_t n) {
    v8f acc[TILE][4] = {{{0}}};  /* four independent sums per row: a single one would wait on each addition */
    for (int64_t j = 0; j < k; j += 32) {
        v8f w0 = weights8(w, bits, j), w1 = weights8(w, bits, j + 8), w2 = weights8(w, bits, j + 16),
            w3 = weights8(w, bits, j + 24);
        for (int t = 0; t < mt; t++) {
            const float *xt = x + t * k + j;
            acc[t][0] += w0 * load(xt);
            acc[t][1] += w1 * load(xt + 8);
            acc[t][2] += w2 * load(xt + 16);
            acc[t][3] += w3 * load(xt + 24);
        }
    }
    for (int t = 0; t < mt; t++) y[t * n] = hsum((acc[t][0] + acc[t][1]) + (acc[t][2] + acc[t][3])) * scale;
}

/* k a multiple of 32; float32 or int8 weights */
static void rows_in_registers(const float *x, const Weights *q, int64_t m, float *y) {
    int64_t n = q->n, k = q->k;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < n; r++)
        for (int64_t i = 0; i < m; i += TILE) {
            /* constant tile sizes and kinds, so that the compiler keeps the accumulators in registers */
            int mt = m - i >= 2 ? 2 : 1;
            float *yi = y + i * n + r;
            if (q->bits == 32) {
                const float *w = (const float *)q->weight + r * k;
                if (mt == 2) dense_row(x + i * k, k, 2, w, 32, 1.0f, yi, n);
                else dense_row(x + i * k, k, 1, w, 32, 1.0f, yi, n);
            } else {
                const int8_t *w = (const int8_t *)q->weight + r * k;
                if (mt == 2) dense_row(x + i * k, k, 2, w, 8, bf16(q->scales[r]), yi, n);
                else dense_row(x + i * k, k, 1, w, 8, bf16(q->scales[r]), yi, n);
            }
        }
}

/* one weight row: w its k / 2 bytes, sm its (scale, minimum) for group 0 (group g lies g * n * 2 further), against
 * a tile of mt rows of x split into even inputs xe and odd inputs xo (k / 2 each, rows k apart) -> y[t * n] */
static inline void int4_row(const float *xe, const float *xo, int64_t k, int mt, const uint8_t *w,
                            const uint16_t *sm, int64_t n, int64_t group, float *y) {
    v8f acc[TILE][4] = {{{0}}};
    for (int64_t g = 0; g < k / group; g++) {
        v8f scale = {0}, minimum = {0};
        scale += bf16(sm[g * n * 2]);
        minimum += bf16(sm[g * n * 2 + 1]);
        for (int64_t j = g * group / 2; j < (g + 1) * group / 2; j += 16) {
            v8f hi0, lo0, hi1, lo1;  /* inputs 2j, 2j + 2, ... and 2j + 1, 2j + 3, ... */
            nibbles(w + j, &hi0, &lo0);
            nibbles(w + j + 8, &hi1, &lo1);
            hi0 = hi0 * scale + minimum, lo0 = lo0 * scale + minimum;
            hi1 = hi1 * scale + minimum, lo1 = lo1 * scale + minimum;
            for (int t = 0; t < mt; t++) {
                acc[t][0] += hi0 * load(xe + t * k + j);
                acc[t][1] += lo0 * load(xo + t * k + j);
                acc[t][2] += hi1 * load(xe + t * k + j + 8);
                acc[t][3] += lo1 * load(xo + t * k + j + 8);
            }
        }
    }
    for (int t = 0; t < mt; t++) y[t * n] = hsum((acc[t][0] + acc[t][1]) + (acc[t][2] + acc[t][3]));
}

/* x split: each row's even inputs, then its odd ones (split_inputs); group a multiple of 32 dividing k */
static void int4_rows(const float *split, const Weights *q, int64_t m, float *y) {
    const uint8_t *w = q->weight;
    int64_t n = q->n, k = q->k;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < n; r++)
        for (int64_t i = 0; i < m; i += TILE) {
            const float *xe = split + i * k, *xo = xe + k / 2;
            if (m - i >= 2) int4_row(xe, xo, k, 2, w + r * k / 2, q->scales + r * 2, n, q->group, y + i * n + r);
            else int4_row(xe, xo, k, 1, w + r * k / 2, q->scales + r * 2, n, q->group, y + i * n + r);
        }
}

static void split_inputs(const float *x, int64_t m, int64_t k, float *split) {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < k / 2; j++) {
            split[i * k + j] = x[i * k + 2 * j];
            split[i * k + k / 2 + j] = x[i * k + 2 * j + 1];
        }
}

/* ---- int4 (and int8, further below) weights against int8 activations (AVX2, VNNI where present): llama.cpp's
 * way of decoding. Each row of x is quantized to int8 with one scale a block of 32 inputs (as llama.cpp's Q8_0;
 * decoding held-out prose token by token: +0.23% perplexity on SmolLM2-135M int4, +0.09% on Qwen2.5-0.5B int4;
 * int8 +0.27% and +0.06%), laid out as the nibbles are: for each pair of blocks, the 16 even inputs of the
 * first, the 16 of the second, then their odd inputs. Then 64 weights are two byte-vector products (nibbles
 * unsigned, activations signed: vpdpbusd, or vpmaddubsw + vpmaddwd) and one float multiply-add, against ~16
 * float operations for 16 weights dequantized to float32. With W = code * scale + minimum per group:
 *   sum_j W_j x_j = sum over blocks b of scale_g(b) * xs_b * sum_j code_j q_j  +  minimum_g(b) * xs_b * sum_j q_j */
#if defined(__AVX2__)
#define INT8_DOTS 1
#define QBLOCK 32

/* bytes of q8_rows per row of k inputs, and its scales and sums after the bytes */
static inline int64_t q8_row_bytes(int64_t k) { return k + 2 * (k / QBLOCK) * (int64_t)sizeof(float); }

/* split: in the nibbles' order (int4), else in the inputs' own (int8) */
static void q8_rows(const float *x, int64_t m, int64_t k, int split, int8_t *out) {
    int64_t blocks = k / QBLOCK, rb = q8_row_bytes(k);
#pragma omp for schedule(static)
    for (int64_t ib = 0; ib < m * blocks; ib++) {
        int64_t i = ib / blocks, b = ib % blocks;
        const float *xb = x + i * k + b * QBLOCK;
        /* split: a pair of blocks' evens, then their odds (32 bytes on) */
        int8_t *q = out + i * rb + (split ? (b & ~1) * QBLOCK + (b & 1) * 16 : b * QBLOCK);
        float *scales = (float *)(out + i * rb + k), *sums = scales + blocks;
        float amax = 0.0f;
        for (int j = 0; j < QBLOCK; j++) amax = fabsf(xb[j]) > amax ? fabsf(xb[j]) : amax;
        float d = amax / 127.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < QBLOCK; j++) {
            int v = (int)lrintf(xb[j] * inv);
            q[split ? (j & 1) * 32 + j / 2 : j] = (int8_t)v;
            sum += v;
        }
        scales[b] = d;
        sums[b] = d * (float)sum;
    }
}

/* 8 int32 sums of 4 products of unsigned bytes u with signed bytes s each */
static inline __m256i dots(__m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#elif defined(__AVXVNNI__)
    return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

/* one int4 weight row (w its k / 2 bytes, sm its (scale, minimum) for group 0) against mt rows of q8_rows -> y */
static inline void int4_q8_row(const int8_t *xq, int64_t k, int mt, const uint8_t *w, const uint16_t *sm, int64_t n,
                               int64_t group, float *y) {
    int64_t blocks = k / QBLOCK, rb = q8_row_bytes(k);
    __m256 acc[TILE];
    float minimums[TILE];
    for (int t = 0; t < mt; t++) acc[t] = _mm256_setzero_ps(), minimums[t] = 0.0f;
    const __m256i low4 = _mm256_set1_epi8(15);
    int shift = __builtin_ctzll(group / QBLOCK);  /* group / 32 blocks a group, a power of two: no division */
    for (int64_t b = 0; b < blocks; b += 2) {
        __m256i bytes = _mm256_loadu_si256((const __m256i *)(w + b * 16));
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4), lo = _mm256_and_si256(bytes, low4);
        int64_t g0 = b >> shift, g1 = (b + 1) >> shift;
        float s0 = bf16(sm[g0 * n * 2]), s1 = bf16(sm[g1 * n * 2]);
        float m0 = bf16(sm[g0 * n * 2 + 1]), m1 = bf16(sm[g1 * n * 2 + 1]);
        for (int t = 0; t < mt; t++) {
            const int8_t *q = xq + t * rb + b * QBLOCK;
            const float *scales = (const float *)(xq + t * rb + k), *sums = scales + blocks;
            __m256i sum = _mm256_add_epi32(dots(hi, _mm256_loadu_si256((const __m256i *)q)),
                                           dots(lo, _mm256_loadu_si256((const __m256i *)(q + 32))));
            __m256 scale = _mm256_set_m128(_mm_set1_ps(s1 * scales[b + 1]), _mm_set1_ps(s0 * scales[b]));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), scale, acc[t]);
            minimums[t] += m0 * sums[b] + m1 * sums[b + 1];
        }
    }
    for (int t = 0; t < mt; t++) y[t * n] = hsum((v8f)acc[t]) + minimums[t];
}

static void int4_q8_rows(const int8_t *xq, const Weights *q, int64_t m, float *y) {
    const uint8_t *w = q->weight;
    int64_t n = q->n, k = q->k, rb = q8_row_bytes(k);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < n; r++)
        for (int64_t i = 0; i < m; i += TILE) {
            const uint16_t *sm = q->scales + r * 2;
            if (m - i >= 2) int4_q8_row(xq + i * rb, k, 2, w + r * k / 2, sm, n, q->group, y + i * n + r);
            else int4_q8_row(xq + i * rb, k, 1, w + r * k / 2, sm, n, q->group, y + i * n + r);
        }
}

/* int8 weights the same way (llama.cpp's Q8_0 x Q8_0): |q| against the weights with q's signs, one float
 * multiply-add a block of 32; the weight row's own scale at the end */
static inline void int8_q8_row(const int8_t *xq, int64_t k, int mt, const int8_t *w, float scale, float *y,
                               int64_t n) {
    int64_t blocks = k / QBLOCK, rb = q8_row_bytes(k);
    __m256 acc[TILE];
    for (int t = 0; t < mt; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < blocks; b++) {
        __m256i wv = _mm256_loadu_si256((const __m256i *)(w + b * QBLOCK));
        for (int t = 0; t < mt; t++) {
            __m256i qv = _mm256_loadu_si256((const __m256i *)(xq + t * rb + b * QBLOCK));
            __m256i d = dots(_mm256_sign_epi8(qv, qv), _mm256_sign_epi8(wv, qv));
            float xs = ((const float *)(xq + t * rb + k))[b];
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_set1_ps(xs), acc[t]);
        }
    }
    for (int t = 0; t < mt; t++) y[t * n] = hsum((v8f)acc[t]) * scale;
}

static void int8_q8_rows(const int8_t *xq, const Weights *q, int64_t m, float *y) {
    int64_t n = q->n, k = q->k, rb = q8_row_bytes(k);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < n; r++)
        for (int64_t i = 0; i < m; i += TILE) {
            const int8_t *w = (const int8_t *)q->weight + r * k;
            float scale = bf16(q->scales[r]);
            if (m - i >= 2) int8_q8_row(xq + i * rb, k, 2, w, scale, y + i * n + r, n);
            else int8_q8_row(xq + i * rb, k, 1, w, scale, y + i * n + r, n);
        }
}
#else
#define INT8_DOTS 0
#endif
int int8_dots(void) { return INT8_DOTS; } /* whether this build has the path above */

/* ---- dequantized rows */

/* weight row r (k inputs) -> out (k,) float32 */
static inline void int8_dequantize_row(const int8_t *w, const uint16_t *scales, int64_t r, int64_t k, float *out) {
    float s = bf16(scales[r]);
    for (int64_t j = 0; j < k; j += 8) store(out + j, int8s(w + r * k + j) * s);
}

/* weight row r of a matrix of n rows (w and sm point at row 0's bytes and (scale, minimum)) -> out (k,) float32 */
static inline void int4_dequantize_row(const uint8_t *w, const uint16_t *sm, int64_t r, int64_t n, int64_t k,
                                       int64_t group, float *out) {
    for (int64_t j = 0; j < k / 2; j += 8) {
        int64_t g = 2 * j / group;
        float s = bf16(sm[(g * n + r) * 2]), mn = bf16(sm[(g * n + r) * 2 + 1]);
        v8f hi, lo;
        nibbles(w + r * k / 2 + j, &hi, &lo);
        hi = hi * s + mn, lo = lo * s + mn;
        store(out + 2 * j, __builtin_shufflevector(hi, lo, 0, 8, 1, 9, 2, 10, 3, 11));
        store(out + 2 * j + 8, __builtin_shufflevector(hi, lo, 4, 12, 5, 13, 6, 14, 7, 15));
    }
}

static inline void dequantize_row(const Weights *q, int64_t r, float *out) {
    if (q->bits == 4) int4_dequantize_row(q->weight, q->scales, r, q->n, q->k, q->group, out);
    else int8_dequantize_row(q->weight, q->scales, r, q->k, out);
}

void int8_dequantize(const int8_t *w, const uint16_t *scales, float *out, int64_t n, int64_t k, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t r = 0; r < n; r++) int8_dequantize_row(w, scales, r, k, out + r * k);
}

/* rows [0, rows) of a matrix of n rows: w and sm point at the first one's bytes and (scale, minimum) */
void int4_dequantize(const uint8_t *w, const uint16_t *sm, float *out, int64_t rows, int64_t n, int64_t k,
                     int64_t group, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t r = 0; r < rows; r++) int4_dequantize_row(w, sm, r, n, k, group, out + r * k);
}

/* ---- more rows of x: weight rows dequantized a block at a time into a small buffer that stays in the CPU's
 * cache, and multiplied with x transposed (k, mp): at each step of k, two vectors of 8 rows of x against each of
 * the block's 6 weights broadcast, 12 sums in registers (the outer-product kernel of BLAS libraries) */

#define BLOCK_ROWS 6 /* weight rows a block */

/* y[i][r + b] for the nb <= BLOCK_ROWS weight rows in buf (k apart) and the rows i0 .. i0 + 15 of x (below m), xt
 * being x transposed (k, mp) */
static inline void outer_tile(const float *buf, int nb, const float *xt, int64_t mp, int64_t k, int64_t m,
                              int64_t i0, float *y, int64_t n, int64_t r) {
    v8f acc[BLOCK_ROWS][2] = {{{0}}};
    for (int64_t j = 0; j < k; j++) {
        v8f x0 = load(xt + j * mp + i0), x1 = load(xt + j * mp + i0 + 8);
        for (int b = 0; b < nb; b++) {
            v8f wb = {0};
            wb += buf[b * k + j];
            acc[b][0] += wb * x0;
            acc[b][1] += wb * x1;
        }
    }
    for (int b = 0; b < nb; b++)
        for (int t = 0; t < 16 && i0 + t < m; t++) y[(i0 + t) * n + r + b] = acc[b][t / 8][t % 8];
}

/* y (m, n) = x (m, k) @ W^T; xt: x transposed (k, mp), mp m rounded up to 16; buf (BLOCK_ROWS, k) floats of the
 * calling thread's own */
static void blocked_rows(const float *xt, int64_t mp, const Weights *q, int64_t m, float *y, float *buf) {
    int64_t n = q->n, k = q->k;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < n; r += BLOCK_ROWS) {
        int nb = n - r < BLOCK_ROWS ? (int)(n - r) : BLOCK_ROWS;
        const float *rows = q->bits == 32 ? (const float *)q->weight + r * k : buf;  /* float32: as they are */
        if (q->bits != 32)
            for (int b = 0; b < nb; b++) dequantize_row(q, r + b, buf + b * k);
        for (int64_t i0 = 0; i0 < m; i0 += 16) {
            /* a constant block size in the common case, so that the compiler keeps every sum in a register */
            if (nb == BLOCK_ROWS) outer_tile(rows, BLOCK_ROWS, xt, mp, k, m, i0, y, n, r);
            else outer_tile(rows, nb, xt, mp, k, m, i0, y, n, r);
        }
    }
}

/* x (m, k) -> xt (k, mp), rows from m to mp zero */
static void transpose_inputs(const float *x, int64_t m, int64_t mp, int64_t k, float *xt) {
#pragma omp for schedule(static)
    for (int64_t j = 0; j < k; j++)
        for (int64_t i = 0; i < mp; i++) xt[j * mp + i] = i < m ? x[i * k + j] : 0.0f;
}

/* ---- inside a parallel region: y (m, n) = x (m, k) @ W^T, scratch (SCRATCH_ROWS(m, threads), k) floats */

#define SCRATCH_ROWS(m, threads) (((m) + 15) / 16 * 16 + (threads) * BLOCK_ROWS)

static void product(const float *x, const Weights *q, int64_t m, float *y, float *scratch) {
    /* where the buffer starts to pay (bench/kernels.py): later for int8, whose bytes widen cheaply in registers */
    if (m > (q->bits == 8 ? 16 : 8)) {
        int64_t mp = (m + 15) / 16 * 16;
        transpose_inputs(x, m, mp, q->k, scratch);
        blocked_rows(scratch, mp, q, m, y, scratch + (mp + omp_get_thread_num() * BLOCK_ROWS) * q->k);
    } else if (q->bits != 32 && INT8_DOTS && q->k % 64 == 0 && int8_activations) {
#if INT8_DOTS
        q8_rows(x, m, q->k, q->bits == 4, (int8_t *)scratch);
        if (q->bits == 4) int4_q8_rows((const int8_t *)scratch, q, m, y);
        else int8_q8_rows((const int8_t *)scratch, q, m, y);
#endif
    } else if (q->bits == 4) {
        split_inputs(x, m, q->k, scratch);
        int4_rows(scratch, q, m, y);
    } else {
        rows_in_registers(x, q, m, y);
    }
}

/* What quantized_matmul.py calls. Returns 1 when out of memory. */
int matmul(const float *x, const void *w, const uint16_t *scales, float *y, int64_t m, int64_t n, int64_t k,
           int64_t bits, int64_t group, int threads) {
    Weights q = {w, scales, n, k, bits, group};
    float *scratch = malloc(sizeof(float) * SCRATCH_ROWS(m, threads) * k);
    if (!scratch) return 1;
#pragma omp parallel num_threads(threads)
    product(x, &q, m, y, scratch);
    free(scratch);
    return 0;
}
