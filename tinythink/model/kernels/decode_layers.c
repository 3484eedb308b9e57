/* Every layer of a quantized Llama-family model for a decoding step, in one call: m sequences, one new token
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
 * Weights are int8 or int4 in quantize.py's formats (group 0 means int8), biases bfloat16; cos and sin (m, d)
 * are each row's rotary table at its position. Built by tinythink/model/native.py.
 */
#include "quantized_matmul.c"
#include "decode_attention.c"

typedef struct {
    const void *weight;      /* int8 (n, k), or int4 nibbles (n, k / 2) */
    const uint16_t *scales;  /* int8: (n,); int4: (k / group, n, 2) (scale, minimum); bfloat16 */
    const uint16_t *bias;    /* (n,) bfloat16, or NULL */
    int64_t n, k, group;     /* group 0: int8 */
} Linear;

typedef struct {
    const float *attn_norm, *mlp_norm;  /* (dim,) */
    Linear qkv, o, gate_up, down;
    float *k_cache, *v_cache;           /* (rows, h_kv, positions, d) */
    int64_t row_stride, head_stride;    /* in floats */
    int64_t h, h_kv, hidden;            /* query heads, KV heads, MLP width */
} Layer;

/* An int4 product reads its input split into even and odd inputs (quantized_matmul.c); inside a parallel region */
static const float *product_input(const Linear *w, const float *x, int64_t m, float *split) {
    if (!w->group) return x;
    int64_t k = w->k, h = k / 2;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < h; j++) {
            split[i * k + j] = x[i * k + 2 * j];
            split[i * k + h + j] = x[i * k + 2 * j + 1];
        }
    return split;
}

/* y (m, n) = x (m, k) @ W^T, x as product_input gave it; inside a parallel region, output rows shared out */
static void product(const Linear *w, const float *x, int64_t m, float *y) {
    int64_t n = w->n, k = w->k;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < n; r++)
        for (int64_t i = 0; i < m; i += TILE) {
            int mt = m - i >= 2 ? 2 : 1;
            if (w->group) {
                const float *xe = x + i * k, *xo = xe + k / 2;
                const uint8_t *wr = (const uint8_t *)w->weight + r * k / 2;
                if (mt == 2) int4_row(xe, xo, k, 2, wr, w->scales + r * 2, n, w->group, y + i * n + r);
                else int4_row(xe, xo, k, 1, wr, w->scales + r * 2, n, w->group, y + i * n + r);
            } else {
                const int8_t *wr = (const int8_t *)w->weight + r * k;
                float s = bf16(w->scales[r]);
                if (mt == 2) int8_row(x + i * k, k, 2, wr, s, y + i * n + r, n);
                else int8_row(x + i * k, k, 1, wr, s, y + i * n + r, n);
            }
        }
}

/* x[i] += y[i] (+ bias), then out[i] = rmsnorm(x[i]) * weight, for each row; inside a parallel region */
static void residual_norm(float *x, const float *y, const uint16_t *bias, const float *weight, float *out,
                          int64_t m, int64_t dim, float eps) {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < m; i++) {
        float *xi = x + i * dim, sum = 0.0f;
        if (y)
            for (int64_t j = 0; j < dim; j++) xi[j] += y[i * dim + j] + (bias ? bf16(bias[j]) : 0.0f);
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
        qkv_n = max64(qkv_n, L->qkv.n), gate_up_n = max64(gate_up_n, L->gate_up.n), att_n = max64(att_n, L->h * d);
    }
    /* h: a layer's normed input; split: an int4 product's input; qkv, att, gate_up, act, y: as named */
    float *buf = malloc(sizeof(float) * m * (2 * dim + widest + qkv_n + att_n + gate_up_n + widest));
    if (!buf) return 1;
    float *h = buf, *y = h + m * dim, *split = y + m * dim, *qkv = split + m * widest, *att = qkv + m * qkv_n,
          *gate_up = att + m * att_n, *act = gate_up + m * gate_up_n;
    float scale = 1.0f / sqrtf((float)d);

#pragma omp parallel num_threads(threads)
    for (int64_t l = 0; l < n_layers; l++) {
        const Layer *L = layers + l;
        const Layer *prev = l ? L - 1 : NULL;
        int64_t H = L->h, H_kv = L->h_kv, g = H / H_kv, I = L->hidden;
        /* the previous layer's MLP output joins the residual stream here */
        residual_norm(x, prev ? y : NULL, NULL, L->attn_norm, h, m, dim, eps);
        product(&L->qkv, product_input(&L->qkv, h, m, split), m, qkv);

#pragma omp for schedule(static)
        for (int64_t item = 0; item < m * (H + H_kv); item++) {  /* (row, q or k head): bias, rope, cache */
            int64_t i = item / (H + H_kv), head = item % (H + H_kv);
            float *row = qkv + i * L->qkv.n, *v = row + (H + H_kv) * d;
            float *part = row + head * d;
            if (L->qkv.bias) {  /* q and k heads lie where their bias does; v heads (H + H_kv) * d further */
                const uint16_t *b = L->qkv.bias + head * d;
                for (int64_t j = 0; j < d; j++) part[j] += bf16(b[j]);
                if (head >= H)
                    for (int64_t j = 0; j < d; j++) v[(head - H) * d + j] += bf16(b[H_kv * d + j]);
            }
            rope(part, cos + i * d, sin + i * d, d);
            if (head >= H) {
                int64_t at = slots[i] * L->row_stride + (head - H) * L->head_stride + positions[i] * d;
                for (int64_t j = 0; j < d; j++) {
                    L->k_cache[at + j] = part[j];
                    L->v_cache[at + j] = v[(head - H) * d + j];
                }
            }
        }

#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < m * H_kv; item++) {  /* (row, KV head): its g query heads together */
            int64_t i = item / H_kv, head = item % H_kv;
            int64_t kv = slots[i] * L->row_stride + head * L->head_stride;
            attend(qkv + i * L->qkv.n + head * g * d, L->k_cache + kv, L->v_cache + kv, positions[i] + 1, (int)g,
                   (int)d, scale, att + (i * H + head * g) * d);
        }
        product(&L->o, product_input(&L->o, att, m, split), m, y);

        residual_norm(x, y, L->o.bias, L->mlp_norm, h, m, dim, eps);
        product(&L->gate_up, product_input(&L->gate_up, h, m, split), m, gate_up);
#pragma omp for schedule(static)
        for (int64_t item = 0; item < m * I; item++) {  /* silu(gate) * up */
            int64_t i = item / I, j = item % I;
            float gate = gate_up[i * 2 * I + j];
            act[item] = gate / (1.0f + expf(-gate)) * gate_up[i * 2 * I + I + j];
        }
        product(&L->down, product_input(&L->down, act, m, split), m, y);
        if (l == n_layers - 1) residual_norm(x, y, NULL, NULL, NULL, m, dim, eps);
    }
    free(buf);
    return 0;
}
