/* Decode attention over a KV cache: each sequence's one new query (all its heads) attends to the first
 * `lengths[t]` positions of its own cache row, reading every key and value it needs exactly once.
 *
 * Why ours: PyTorch's SDPA on CPU runs a decoding batch as one padded call (rows read up to the longest row)
 * or one call per row; its flash kernel is tuned for many queries and reads a single query's float32 keys and
 * values at ~7 GB/s where the memory gives ~22 (a 2-core AVX2 EPYC). Here a (sequence, KV head) pair is one
 * work item: the G query heads sharing that KV head are scored together against each key (grouped-query
 * attention without repeating keys), with an online softmax over blocks of positions (one pass over K and V).
 *
 * Layout (contiguous unless a stride says otherwise):
 *   q, out: (n, h, d) float32, the new tokens' queries and attention outputs; query head j uses KV head
 *           j / (h / h_kv)
 *   k, v:   the cache, (rows, h_kv, positions, d), float32 or bfloat16 (`bf16`): row stride `row_stride`, head
 *           stride `head_stride` elements; scores and sums in float32 either way
 *   slots:  (n,) the cache row of each token; lengths: (n,) the positions it attends to, 1 or more
 * Built with -O3 -ffast-math -march=native -fopenmp, at first use, by tinythink/model/native.py.
 */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "bfloat16.h"

#define BLOCK 64    /* positions scored before their values are accumulated */
#define MAX_G 16    /* query heads per KV head (decode_attention.py's supports() says the same) */
#define MAX_D 256   /* head dimension */

/* q (d,) . k (d,), k float32 or bfloat16 */
static inline float dot_kv(const float *restrict q, const void *restrict k, int is_bf16, int d) {
    float dot = 0.0f;
    if (is_bf16) {
        const uint16_t *kb = k;
#pragma omp simd reduction(+ : dot)
        for (int j = 0; j < d; j++) dot += q[j] * bf16(kb[j]);
    } else {
        const float *kf = k;
#pragma omp simd reduction(+ : dot)
        for (int j = 0; j < d; j++) dot += q[j] * kf[j];
    }
    return dot;
}

/* acc (d,) += w * v (d,), v float32 or bfloat16 */
static inline void add_kv(float *restrict acc, float w, const void *restrict v, int is_bf16, int d) {
    if (is_bf16) {
        const uint16_t *vb = v;
#pragma omp simd
        for (int j = 0; j < d; j++) acc[j] += w * bf16(vb[j]);
    } else {
        const float *vf = v;
#pragma omp simd
        for (int j = 0; j < d; j++) acc[j] += w * vf[j];
    }
}

/* g queries (g, d) against the keys and values k, v (length, d; float32 or bfloat16) -> out (g, d) */
static void attend(const float *restrict q, const void *restrict k, const void *restrict v, int is_bf16,
                   int64_t length, int g, int d, float scale, float *restrict out) {
    float acc[MAX_G * MAX_D], s[MAX_G * BLOCK], m[MAX_G], l[MAX_G];
    size_t row = (size_t)d * (is_bf16 ? 2 : 4);  /* bytes a position */
    for (int i = 0; i < g; i++) {
        m[i] = -FLT_MAX;  /* the running maximum score; -ffast-math assumes no infinities */
        l[i] = 0.0f;      /* the running sum of exp(score - m) */
        for (int j = 0; j < d; j++) acc[i * d + j] = 0.0f;
    }
    for (int64_t start = 0; start < length; start += BLOCK) {
        int n = length - start < BLOCK ? (int)(length - start) : BLOCK;
        const char *kb = (const char *)k + start * row, *vb = (const char *)v + start * row;
        for (int p = 0; p < n; p++)
            for (int i = 0; i < g; i++) s[i * BLOCK + p] = dot_kv(q + i * d, kb + p * row, is_bf16, d) * scale;
        for (int i = 0; i < g; i++) {
            float *si = s + i * BLOCK, top = m[i], sum = 0.0f;
            for (int p = 0; p < n; p++) top = si[p] > top ? si[p] : top;
#pragma omp simd reduction(+ : sum)
            for (int p = 0; p < n; p++) {
                si[p] = expf(si[p] - top);
                sum += si[p];
            }
            float rescale = expf(m[i] - top);  /* earlier blocks' weights, relative to the new maximum */
            m[i] = top;
            l[i] = l[i] * rescale + sum;
            for (int j = 0; j < d; j++) acc[i * d + j] *= rescale;
        }
        for (int p = 0; p < n; p++)
            for (int i = 0; i < g; i++) add_kv(acc + i * d, s[i * BLOCK + p], vb + p * row, is_bf16, d);
    }
    for (int i = 0; i < g; i++)
        for (int j = 0; j < d; j++) out[i * d + j] = acc[i * d + j] / l[i];
}

int decode_attention(const float *q, const void *k, const void *v, int is_bf16, const int64_t *slots,
                     const int64_t *lengths, float *out, int64_t n, int h, int h_kv, int d, int64_t row_stride,
                     int64_t head_stride, float scale, int threads) {
    int g = h / h_kv;
    size_t elem = is_bf16 ? 2 : 4;
    if (h % h_kv || g > MAX_G || d > MAX_D) return 1;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t item = 0; item < n * h_kv; item++) {
        int64_t t = item / h_kv, head = item % h_kv;
        int64_t kv = (slots[t] * row_stride + head * head_stride) * elem, qo = (t * h + head * g) * d;
        attend(q + qo, (const char *)k + kv, (const char *)v + kv, is_bf16, lengths[t], g, d, scale, out + qo);
    }
    return 0;
}
