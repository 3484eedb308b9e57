/* bfloat16 (the top half of a float32) to and from float32, for the kernels that keep or read it: scales of
 * quantized weights, and the KV cache's keys and values. */
#ifndef TINYTHINK_BFLOAT16_H
#define TINYTHINK_BFLOAT16_H
#include <stdint.h>

static inline float bf16(uint16_t h) {
    union { uint32_t u; float f; } c = {(uint32_t)h << 16};
    return c.f;
}

/* rounded to nearest, ties to even, as PyTorch's .to(torch.bfloat16) (no NaNs here: built with -ffast-math) */
static inline uint16_t to_bf16(float f) {
    union { float f; uint32_t u; } c = {f};
    return (uint16_t)((c.u + 0x7fffu + ((c.u >> 16) & 1u)) >> 16);
}
#endif
