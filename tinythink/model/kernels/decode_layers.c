/* Every layer of a Llama-family model for a decoding step, in one call: m sequences, one new token
 * each, from the embeddings to the last layer's output (the caller applies the final norm and the head).
 *
 * Why ours: run as PyTorch operators, a decoding step of SmolLM2-135M is ~600 small operators (norms, rotary
 * embeddings, cache writes, splits, residual additions around the products), each costing more to dispatch
 * than its arithmetic: at one row they took as long as the int4 products themselves. Here a layer is nine
 * stages of one OpenMP parallel region, a barrier between them, on the products of quantized_matmul.c and the
 * attention of decode_attention.c (both included, so one library holds what a step needs).
 *
 * Per layer, for each row i (x: (m, dim) float32, the residual stream, updated in place):
 *   h = rmsnorm(x) * attn_norm; qkv = h @ Wqkv^T (+ bias); q, k = rope(q, k); cache[slot, :, position] = k, v
 *   x += attend(q, cache row up to position) @ Wo^T (+ bias)
 *   h = rmsnorm(x) * mlp_norm; gate, up = h @ Wgate_up^T; x += (silu(gate) * up) @ Wdown^T
 * Weights are float32, int8 or int4 (quantized_matmul.c's formats), biases float32, the cache float32 or
 * bfloat16; cos and sin (m, d) are each row's rotary table at its position. Built by tinythink/model/native.py.
 */
#include "quantized_matmul.c"
#include "decode_attention.c"

typedef struct {
    Weights w;               /* quantized_matmul.c's formats */
    const float *bias;       /* (n,), or NULL */
} Linear;

typedef struct {
    const float *attn_norm, *mlp_norm;  /* (dim,) */
    Linear qkv, o, gate_up, down;
    void *k_cache, *v_cache;            /* (rows, h_kv, positions, d), float32 or bfloat16 */
    int64_t row_stride, head_stride;    /* in elements */
    int64_t h, h_kv, hidden;            /* query heads, KV heads, MLP width */
    int64_t bf16_cache;                 /* 1: the cache is bfloat16 */
} Layer;

/* x[i] += y[i] (+ bias), then out[i] = rmsnorm(x[i]) * weight, for each row; inside a parallel region */
static void residual_norm(float *x, const float *y, const float *bias, const float *weight, float *out,
                          int64_t m, int64_t dim, float eps) {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < m; i++) {
        float *xi = x + i * dim, sum = 0.0f;
        if (y)
            for (int64_t j = 0; j < dim; j++) xi[j] += y[i * dim + j] + (bias ? bias[j] : 0.0f);
        if (!out) continue;
        for (int64_t j = 0; j < dim; j++) sum += xi[j] * xi[j];
        float r = 1.0f / sqrtf(sum / dim + eps);
        for (int64_t j = 0; j < dim; j++) out[i * dim + j] = weight[j] * (xi[j] * r);
    }
}

/* x (d,) rotated in place as Hugging Face's rotate_half does: (x1, x2) -> x * cos + (-x2, x1) * sin */
static void rope(float *x, const float *cos, const float *sin, int64_t d) {
    int64_t half = d / 2;
    for (int64_t j = 0; j < half; j++) {
        float a = x[j], b = x[j + half];
        x[j] = a * cos[j] - b * sin[j];
        x[j + half] = b * cos[j + half] + a * sin[j + half];
    }
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Returns 1 when out of memory, 2 for a shape the attention cannot run. */
int decode_layers(const Layer *layers, int64_t n_layers, float *x, int64_t m, int64_t dim, int64_t d,
                  const float *cos, const float *sin, const int64_t *slots, const int64_t *positions, float eps,
                  int threads) {
    int64_t widest = dim, qkv_n = 0, gate_up_n = 0, att_n = 0;
    for (int64_t l = 0; l < n_layers; l++) {
        const Layer *L = layers + l;
        if (L->h % L->h_kv || L->h / L->h_kv > MAX_G || d > MAX_D) return 2;
        widest = max64(widest, max64(L->h * d, L->hidden));
        qkv_n = max64(qkv_n, L->qkv.w.n);
        gate_up_n = max64(gate_up_n, L->gate_up.w.n);
        att_n = max64(att_n, L->h * d);
    }
    /* h: a layer's normed input; qkv, att, gate_up, act, y: as named; scratch: the products' (quantized_matmul.c) */
    int64_t scratch_n = SCRATCH_ROWS(m, threads) * widest;
    float *buf = malloc(sizeof(float) * (m * (2 * dim + qkv_n + att_n + gate_up_n + widest) + scratch_n));
    if (!buf) return 1;
    float *h = buf, *y = h + m * dim, *qkv = y + m * dim, *att = qkv + m * qkv_n, *gate_up = att + m * att_n,
          *act = gate_up + m * gate_up_n, *scratch = act + m * widest;
    float scale = 1.0f / sqrtf((float)d);

#pragma omp parallel num_threads(threads)
    for (int64_t l = 0; l < n_layers; l++) {
        const Layer *L = layers + l;
        int64_t H = L->h, H_kv = L->h_kv, g = H / H_kv, I = L->hidden;
        /* the previous layer's MLP output joins the residual stream here */
        residual_norm(x, l ? y : NULL, NULL, L->attn_norm, h, m, dim, eps);
        product(h, &L->qkv.w, m, qkv, scratch);

#pragma omp for schedule(static)
        for (int64_t item = 0; item < m * (H + H_kv); item++) {  /* (row, q or k head): bias, rope, cache */
            int64_t i = item / (H + H_kv), head = item % (H + H_kv);
            float *row = qkv + i * L->qkv.w.n, *v = row + (H + H_kv) * d;
            float *part = row + head * d;
            if (L->qkv.bias) {  /* a q or k head's bias is at head * d, a k head's v head's H_kv * d further */
                const float *b = L->qkv.bias + head * d;
                for (int64_t j = 0; j < d; j++) part[j] += b[j];
                if (head >= H)
                    for (int64_t j = 0; j < d; j++) v[(head - H) * d + j] += b[H_kv * d + j];
            }
            rope(part, cos + i * d, sin + i * d, d);
            if (head >= H) {
                int64_t at = slots[i] * L->row_stride + (head - H) * L->head_stride + positions[i] * d;
                const float *vh = v + (head - H) * d;
                if (L->bf16_cache) {
                    uint16_t *kc = (uint16_t *)L->k_cache + at, *vc = (uint16_t *)L->v_cache + at;
                    for (int64_t j = 0; j < d; j++) kc[j] = to_bf16(part[j]), vc[j] = to_bf16(vh[j]);
                } else {
                    float *kc = (float *)L->k_cache + at, *vc = (float *)L->v_cache + at;
                    for (int64_t j = 0; j < d; j++) kc[j] = part[j], vc[j] = vh[j];
                }
            }
        }

#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < m * H_kv; item++) {  /* (row, KV head): its g query heads together */
            int64_t i = item / H_kv, head = item % H_kv;
            int64_t kv = (slots[i] * L->row_stride + head * L->head_stride) * (L->bf16_cache ? 2 : 4);
            attend(qkv + i * L->qkv.w.n + head * g * d, (char *)L->k_cache + kv, (char *)L->v_cache + kv,
                   (int)L->bf16_cache, positions[i] + 1, (int)g, (int)d, scale, att + (i * H + head * g) * d);
        }
        product(att, &L->o.w, m, y, scratch);

        residual_norm(x, y, L->o.bias, L->mlp_norm, h, m, dim, eps);
        product(h, &L->gate_up.w, m, gate_up, scratch);
#pragma omp for schedule(static)
        for (int64_t item = 0; item < m * I; item++) {  /* silu(gate) * up */
            int64_t i = item / I, j = item % I;
            float gate = gate_up[i * 2 * I + j];
            act[item] = gate / (1.0f + expf(-gate)) * gate_up[i * 2 * I + I + j];
        }
        product(act, &L->down.w, m, y, scratch);
        if (l == n_layers - 1) residual_norm(x, y, NULL, NULL, NULL, m, dim, eps);
    }
    free(buf);
    return 0;
}
