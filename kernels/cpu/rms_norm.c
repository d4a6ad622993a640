/* RMSNorm on the CPU, optionally fused with the residual add: one pass over each row to sum the squares (and
 * write x + residual), one to normalise, rows in parallel. Rounds where the torch reference
 * (kernels.rms_norm.rms_norm_ref) rounds, so bf16 results are those of the unfused model:
 *
 *   s    = x + residual                      rounded to x's dtype
 *   rstd = 1 / sqrt(sum(s^2) / hidden + eps)  fp32 (the sum accumulated in double, torch sums in another order)
 *   y    = round(s * rstd) * weight          the product in the output dtype, promote(x dtype, weight dtype)
 *
 * Layouts: x, residual, summed, out contiguous [rows, hidden]; weight [hidden]. Elements are fp32, or bf16 where
 * the matching flag is set; out is bf16 only when x and weight both are. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#pragma STDC FP_CONTRACT OFF /* each product and sum rounded on its own, as torch computes them */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("prefer-vector-width=512") /* full AVX-512 vectors where -march=native has them */
#endif

#include "bf16.h" /* after the target pragma, so its functions inline into the kernels */

static inline float load(const void *p, int64_t i, int bf16) {
    return bf16 ? from_bf16(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

static inline void store(void *p, int64_t i, float v, int bf16) {
    if (bf16)
        ((uint16_t *)p)[i] = to_bf16(v);
    else
        ((float *)p)[i] = v;
}

static inline float round_to(float v, int bf16) { return bf16 ? rounded(v) : v; }

/* Inlined with constant flags below, so each dtype combination gets its own vectorised loops. */
static inline __attribute__((always_inline)) void norm_row(const void *x, const void *residual, const void *weight,
                                                          void *out, void *summed, int64_t row, int64_t hidden,
                                                          float eps, int x_bf16, int w_bf16) {
    const int out_bf16 = x_bf16 && w_bf16;
    const int64_t base = row * hidden;
    const void *src = x;
    double squares = 0.0;
    if (residual) {
#pragma omp simd reduction(+ : squares)
        for (int64_t i = 0; i < hidden; i++) {
            const float s = round_to(load(x, base + i, x_bf16) + load(residual, base + i, x_bf16), x_bf16);
            store(summed, base + i, s, x_bf16);
            squares += (double)(s * s);
        }
        src = summed; /* re-read below: it holds s exactly as rounded */
    } else {
#pragma omp simd reduction(+ : squares)
        for (int64_t i = 0; i < hidden; i++) {
            const float s = load(x, base + i, x_bf16);
            squares += (double)(s * s);
        }
    }
    const float variance = (float)squares / (float)hidden; /* torch: fp32 sum, then divided */
    const float rstd = 1.0f / sqrtf(variance + eps);       /* torch.rsqrt on the CPU: 1 / sqrt */
#pragma omp simd
    for (int64_t i = 0; i < hidden; i++) {
        const float normed = round_to(load(src, base + i, x_bf16) * rstd, x_bf16);
        store(out, base + i, load(weight, i, w_bf16) * normed, out_bf16);
    }
}

/* residual and summed are NULL without a residual. */
void rms_norm(const void *x, const void *residual, const void *weight, void *out, void *summed, int64_t rows,
              int64_t hidden, float eps, int x_bf16, int w_bf16) {
#pragma omp parallel for schedule(static) if (rows * hidden >= 16384)
    for (int64_t r = 0; r < rows; r++) {
        if (x_bf16 && w_bf16)
            norm_row(x, residual, weight, out, summed, r, hidden, eps, 1, 1);
        else if (x_bf16)
            norm_row(x, residual, weight, out, summed, r, hidden, eps, 1, 0);
        else if (w_bf16)
            norm_row(x, residual, weight, out, summed, r, hidden, eps, 0, 1);
        else
            norm_row(x, residual, weight, out, summed, r, hidden, eps, 0, 0);
    }
}
