/* Products with weight-only quantized matrices and float32 activations: y (m, n) = x (m, k) @ W^T.
 *
 * Why ours: PyTorch's CPU kernels for int8/int4 weights take bfloat16 activations, which a CPU without native
 * bfloat16 (AVX2) converts to and from at every layer, and at one to a few rows (decoding) they run far below
 * the memory's speed. Here, for the few rows of decoding, each weight row is read from memory once per call and
 * dequantized in registers for every two rows of x it multiplies. For many rows (prefill) `*_dequantize` writes
 * float32 weights once and the caller multiplies them with a float32 GEMM.
 *
 * Formats (tinythink/model/quantize.py):
 *   int8: w (n, k) int8, scales (n,) bfloat16: W[r][j] = w[r][j] * scales[r]
 *   int4: w (n, k / 2) uint8, input 2i in the high nibble and 2i + 1 in the low one; scales_mins (k / group, n, 2)
 *         bfloat16, (scale, minimum) per group of `group` inputs: W[r][j] = code * scale + minimum
 * x and y are contiguous float32. Built with -O3 -ffast-math -march=native -fopenmp at first use
 * (tinythink/model/native.py); GCC's vector extensions lower to AVX2 here, to narrower units elsewhere.
 */
#include <stdint.h>
#include <stdlib.h>

typedef float v8f __attribute__((vector_size(32), aligned(4)));

#define TILE 2 /* rows of x multiplied with each dequantized piece of a weight row (4: slower, registers spill) */

static inline float bf16(uint16_t h) {
    union { uint32_t u; float f; } c = {(uint32_t)h << 16};
    return c.f;
}

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

/* ---- int8 */

/* one weight row (k inputs) against a tile of mt rows of x (k apart) -> y[t * n] */
static inline void int8_row(const float *x, int64_t k, int mt, const int8_t *w, float scale, float *y, int64_t n) {
    v8f acc[TILE][4] = {{{0}}};  /* four independent sums per row: a single one would wait on each addition */
    for (int64_t j = 0; j < k; j += 32) {
        v8f w0 = int8s(w + j), w1 = int8s(w + j + 8), w2 = int8s(w + j + 16), w3 = int8s(w + j + 24);
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

/* k a multiple of 32 */
void int8_matmul(const float *x, const int8_t *w, const uint16_t *scales, float *y, int64_t m, int64_t n, int64_t k,
                 int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t r = 0; r < n; r++) {
        float s = bf16(scales[r]);
        for (int64_t i = 0; i < m; i += TILE) {
            const float *xi = x + i * k;
            /* constant tile sizes, so that the compiler keeps the accumulators in registers */
            if (m - i >= 2) int8_row(xi, k, 2, w + r * k, s, y + i * n + r, n);
            else int8_row(xi, k, 1, w + r * k, s, y + i * n + r, n);
        }
    }
}

void int8_dequantize(const int8_t *w, const uint16_t *scales, float *out, int64_t n, int64_t k, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t r = 0; r < n; r++) {
        float s = bf16(scales[r]);
        for (int64_t j = 0; j < k; j += 8) store(out + r * k + j, int8s(w + r * k + j) * s);
    }
}

/* ---- int4 */

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

/* group a multiple of 32 dividing k. Returns 1 when out of memory. */
int int4_matmul(const float *x, const uint8_t *w, const uint16_t *sm, float *y, int64_t m, int64_t n, int64_t k,
                int64_t group, int threads) {
    int64_t h = k / 2;
    float *split = malloc(sizeof(float) * m * k);  /* each row of x: its even inputs, then its odd ones */
    if (!split) return 1;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < h; j++) {
            split[i * k + j] = x[i * k + 2 * j];
            split[i * k + h + j] = x[i * k + 2 * j + 1];
        }
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t r = 0; r < n; r++) {
        for (int64_t i = 0; i < m; i += TILE) {
            const float *xe = split + i * k, *xo = xe + h;
            const uint8_t *wr = w + r * h;
            if (m - i >= 2) int4_row(xe, xo, k, 2, wr, sm + r * 2, n, group, y + i * n + r);
            else int4_row(xe, xo, k, 1, wr, sm + r * 2, n, group, y + i * n + r);
        }
    }
    free(split);
    return 0;
}

/* rows [0, rows) of a matrix of n rows: w and sm point at the first one's bytes and (scale, minimum) */
void int4_dequantize(const uint8_t *w, const uint16_t *sm, float *out, int64_t rows, int64_t n, int64_t k,
                     int64_t group, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < k / 2; j += 8) {
            int64_t g = 2 * j / group;
            float s = bf16(sm[(g * n + r) * 2]), mn = bf16(sm[(g * n + r) * 2 + 1]);
            v8f hi, lo;
            nibbles(w + r * k / 2 + j, &hi, &lo);
            hi = hi * s + mn, lo = lo * s + mn;
            store(out + r * k + 2 * j, __builtin_shufflevector(hi, lo, 0, 8, 1, 9, 2, 10, 3, 11));
            store(out + r * k + 2 * j + 8, __builtin_shufflevector(hi, lo, 4, 12, 5, 13, 6, 14, 7, 15));
        }
}
