/* Weights as files store them -> as tinythink runs them: GGUF (ggml) blocks -> float32 rows, and float32 rows -> int8
 * with one scale a row. For loading.
 * Why ours: the `gguf` package dequantizes in numpy at ~100-150 M weights/s here, and quantizing the float32
 * result to int8 in PyTorch takes five passes over it; loading Qwen2.5-1.5B's Q4_K_M file in int8 spent ~40 of its
 * ~55 s there. One pass per row here, rows spread over the threads.
 *
 * Block layouts and formulas are llama.cpp's (ggml-common.h, dequantize_row_* in ggml-quants.c), which the
 * `gguf` package's numpy code follows too; tinythink checks each type against that code before using this.
 * Types not here (Q2_K, Q3_K, the IQ ones) are left to the `gguf` package: dequantize_rows returns -1 for them.
 * Built with -O3 -ffast-math -march=native -fopenmp, at first use, by tinythink/model/native.py.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

/* ggml's type ids */
enum { F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q4_K = 12, Q5_K = 13, Q6_K = 14,
       BF16 = 30 };

static float half(const uint8_t *p) {  /* IEEE binary16 at p (little-endian) -> float */
    uint16_t h = (uint16_t)(p[0] | p[1] << 8);
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 31, mant = h & 0x3ff, bits;
    if (exp == 0) {  /* zero or subnormal: mant * 2^-24 */
        float f = (float)mant * 5.9604644775390625e-8f;
        return sign ? -f : f;
    }
    bits = exp == 31 ? sign | 0x7f800000u | mant << 13 : sign | (exp + 112) << 23 | mant << 13;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static void scale_min_k4(int j, const uint8_t *q, float *d, float *m) {  /* Q4_K/Q5_K's 6-bit scale and min */
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* one block at x -> its weights at y (its size: block_bytes) */
static void block(int type, const uint8_t *x, float *restrict y) {
    switch (type) {
    case Q8_0: {  /* d, 32 x int8 */
        float d = half(x);
        for (int l = 0; l < 32; l++) y[l] = d * (int8_t)x[2 + l];
        return;
    }
    case Q4_0: case Q4_1: {  /* d, [m], 16 bytes: weight l in the low nibble of byte l, l + 16 in the high */
        float d = half(x), m = type == Q4_1 ? half(x + 2) : -8.0f * d;
        const uint8_t *q = x + (type == Q4_1 ? 4 : 2);
        for (int l = 0; l < 16; l++) {
            y[l] = d * (q[l] & 0xF) + m;
            y[l + 16] = d * (q[l] >> 4) + m;
        }
        return;
    }
    case Q5_0: case Q5_1: {  /* d, [m], 32 fifth bits, 16 bytes of nibbles as Q4's */
        float d = half(x), m = type == Q5_1 ? half(x + 2) : -16.0f * d;
        const uint8_t *h = x + (type == Q5_1 ? 4 : 2), *q = h + 4;
        uint32_t qh = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
        for (int l = 0; l < 16; l++) {
            y[l] = d * ((q[l] & 0xF) | ((qh >> l) << 4 & 0x10)) + m;
            y[l + 16] = d * ((q[l] >> 4) | ((qh >> (l + 12)) & 0x10)) + m;
        }
        return;
    }
    case Q4_K: case Q5_K: {  /* d, dmin, 12 bytes of scales, [32 bytes of fifth bits], 128 bytes of nibbles */
        float d = half(x), dmin = half(x + 2);
        const uint8_t *scales = x + 4, *qh = x + 16, *q = x + (type == Q5_K ? 48 : 16);
        for (int j = 0, is = 0; j < 256; j += 64, is += 2, q += 32) {
            float s1, m1, s2, m2;
            scale_min_k4(is, scales, &s1, &m1);
            scale_min_k4(is + 1, scales, &s2, &m2);
            float d1 = d * s1, d2 = d * s2, o1 = dmin * m1, o2 = dmin * m2;
            int u1 = 1 << is, u2 = 2 << is;  /* this pair of 32-weight groups' bits in qh */
            for (int l = 0; l < 32; l++) {
                int hi1 = type == Q5_K && (qh[l] & u1) ? 16 : 0, hi2 = type == Q5_K && (qh[l] & u2) ? 16 : 0;
                y[j + l] = d1 * ((q[l] & 0xF) + hi1) - o1;
                y[j + 32 + l] = d2 * ((q[l] >> 4) + hi2) - o2;
            }
        }
        return;
    }
    case Q6_K: {  /* 128 bytes low nibbles, 64 bytes high 2 bits, 16 int8 scales, d */
        const uint8_t *ql = x, *qh = x + 128;
        const int8_t *sc = (const int8_t *)(x + 192);
        float d = half(x + 208);
        for (int n = 0; n < 256; n += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                y[n + l] = d * sc[is] * (((ql[l] & 0xF) | ((qh[l] >> 0 & 3) << 4)) - 32);
                y[n + l + 32] = d * sc[is + 2] * (((ql[l + 32] & 0xF) | ((qh[l] >> 2 & 3) << 4)) - 32);
                y[n + l + 64] = d * sc[is + 4] * (((ql[l] >> 4) | ((qh[l] >> 4 & 3) << 4)) - 32);
                y[n + l + 96] = d * sc[is + 6] * (((ql[l + 32] >> 4) | ((qh[l] >> 6 & 3) << 4)) - 32);
            }
        }
        return;
    }
    }
}

static int block_weights(int type) {
    switch (type) {
    case Q8_0: case Q4_0: case Q4_1: case Q5_0: case Q5_1: return 32;
    case Q4_K: case Q5_K: case Q6_K: return 256;
    case F32: case F16: case BF16: return 1;
    }
    return 0;
}

static int block_bytes(int type) {
    switch (type) {
    case Q8_0: return 34; case Q4_0: return 18; case Q4_1: return 20; case Q5_0: return 22; case Q5_1: return 24;
    case Q4_K: return 144; case Q5_K: return 176; case Q6_K: return 210;
    case F32: return 4; case F16: case BF16: return 2;
    }
    return 0;
}

/* the bytes of a row of `cols` weights of a type (0: not a type here, or cols not whole blocks) */
int64_t row_bytes(int type, int64_t cols) {
    int w = block_weights(type);
    return w == 0 || cols % w ? 0 : cols / w * block_bytes(type);
}

/* src: `rows` rows of `cols` weights of `type`, contiguous -> dst (rows, cols) float32. 0, or -1 where this file
 * does not know the type or cols is not whole blocks of it. */
int dequantize_rows(int type, const uint8_t *src, float *dst, int64_t rows, int64_t cols) {
    int64_t stride = row_bytes(type, cols);
    if (stride == 0) return -1;
    int w = block_weights(type), bytes = block_bytes(type);
    #pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *x = src + r * stride;
        float *y = dst + r * cols;
        if (type == F32) {
            memcpy(y, x, 4 * cols);
        } else if (type == F16) {
            for (int64_t c = 0; c < cols; c++) y[c] = half(x + 2 * c);
        } else if (type == BF16) {
            for (int64_t c = 0; c < cols; c++) {
                uint32_t bits = (uint32_t)(x[2 * c] | x[2 * c + 1] << 8) << 16;
                memcpy(y + c, &bits, 4);
            }
        } else {
            for (int64_t c = 0; c < cols; c += w, x += bytes) block(type, x, y + c);
        }
    }
    return 0;
}

/* w (rows, cols) float32 -> q (rows, cols) int8 and scales (rows,) float32: symmetric, one scale a row,
 * scale = max|w| / 127 (at least 1e-8), q = round(w / scale) — quantize.py's Int8Linear.from_weight, one pass */
void quantize_int8_rows(const float *w, int64_t rows, int64_t cols, int8_t *q, float *scales) {
    #pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *x = w + r * cols;
        float amax = 0.0f;
        for (int64_t c = 0; c < cols; c++) amax = fmaxf(amax, fabsf(x[c]));
        float s = fmaxf(amax / 127.0f, 1e-8f);
        for (int64_t c = 0; c < cols; c++) {
            float v = nearbyintf(x[c] / s);
            q[r * cols + c] = (int8_t)fminf(fmaxf(v, -127.0f), 127.0f);
        }
        scales[r] = s;
    }
}
