/* Rotary position embedding on the CPU, GPT-NeoX "rotate_half" convention, rotating q and k in place; tokens
 * in parallel. Computes what the torch reference (kernels.rotary.apply_rotary_ref) computes, step for step:
 * cos and sin rounded to the element dtype, then each product and each sum rounded on its own:
 *
 *   x = [x1 | x2]  ->  [x1 * cos - x2 * sin | x2 * cos + x1 * sin]
 *
 * Layouts: q [tokens, q_heads, head_dim] and k [tokens, kv_heads, head_dim] with any token and head strides
 * (in elements) and unit stride within a head; positions [tokens] int64; cos_sin_cache fp32 with rows of
 * [cos | sin] (head_dim / 2 each) `cache_stride` elements apart. Elements are fp32, or bf16 when `bf16` is set. */
#include <stdint.h>
#include <string.h>

#pragma STDC FP_CONTRACT OFF /* each product and sum rounded on its own, as torch computes them */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("prefer-vector-width=512") /* full AVX-512 vectors where -march=native has them */
#endif

#include "bf16.h" /* after the target pragma, so its functions inline into the kernels */

static void rotate_bf16(uint16_t *x, const float *cos, const float *sin, int64_t half) {
    uint16_t *x2 = x + half;
#pragma omp simd
    for (int64_t i = 0; i < half; i++) {
        const float a = from_bf16(x[i]), b = from_bf16(x2[i]);
        const float ac = rounded(a * cos[i]), bs = rounded(b * sin[i]);
        const float bc = rounded(b * cos[i]), as = rounded(a * sin[i]);
        x[i] = to_bf16(ac - bs);
        x2[i] = to_bf16(bc + as);
    }
}

static void rotate_fp32(float *x, const float *cos, const float *sin, int64_t half) {
    float *x2 = x + half;
#pragma omp simd
    for (int64_t i = 0; i < half; i++) {
        const float a = x[i], b = x2[i];
        const float ac = a * cos[i], bs = b * sin[i];
        const float bc = b * cos[i], as = a * sin[i];
        x[i] = ac - bs;
        x2[i] = bc + as;
    }
}

static void rotate_heads(void *x, int64_t token, int64_t token_stride, int64_t head_stride, int64_t num_heads,
                         const float *cos, const float *sin, int64_t half, int bf16) {
    for (int64_t h = 0; h < num_heads; h++) {
        const int64_t offset = token * token_stride + h * head_stride;
        if (bf16)
            rotate_bf16((uint16_t *)x + offset, cos, sin, half);
        else
            rotate_fp32((float *)x + offset, cos, sin, half);
    }
}

void rotary(void *q, void *k, const int64_t *positions, const float *cos_sin_cache, int64_t tokens,
            int64_t q_heads, int64_t kv_heads, int64_t head_dim, int64_t q_token_stride, int64_t q_head_stride,
            int64_t k_token_stride, int64_t k_head_stride, int64_t cache_stride, int bf16) {
    const int64_t half = head_dim / 2;
#pragma omp parallel for schedule(static) if (tokens * (q_heads + kv_heads) * head_dim >= 16384)
    for (int64_t t = 0; t < tokens; t++) {
        float cos[half], sin[half];
        const float *row = cos_sin_cache + positions[t] * cache_stride;
        for (int64_t i = 0; i < half; i++) {
            cos[i] = bf16 ? rounded(row[i]) : row[i]; /* the reference casts cos and sin to the model dtype */
            sin[i] = bf16 ? rounded(row[half + i]) : row[half + i];
        }
        rotate_heads(q, t, q_token_stride, q_head_stride, q_heads, cos, sin, half, bf16);
        rotate_heads(k, t, k_token_stride, k_head_stride, kv_heads, cos, sin, half, bf16);
    }
}
