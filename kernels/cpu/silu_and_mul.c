/* SwiGLU's activation on the CPU: out = silu(gate) * up, gate and up the two halves of each row of the fused
 * gate|up projection, rows in parallel. Computes what `F.silu(gate) * up` computes in torch, step for step:
 *
 *   silu = g / (1 + exp(-g))   in fp32, rounded to the element dtype (torch's CPU silu kernel)
 *   out  = silu * u            in fp32, rounded to the element dtype
 *
 * exp is SLEEF's expf_u10 (FMA variant), the one torch's vectorised CPU kernels call, so results match torch
 * bit for bit wherever torch takes its vectorised path; its scalar loop over the last few elements of a row
 * (fewer than two vectors) calls libm's expf instead, which can differ by one fp32 ulp.
 *
 * Layouts: gate_up contiguous [rows, 2 * inter]; out contiguous [rows, inter]. Elements are fp32, or bf16 when
 * `bf16` is set. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#pragma STDC FP_CONTRACT OFF /* each product and sum rounded on its own, as torch computes them */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("prefer-vector-width=512") /* full AVX-512 vectors where -march=native has them */
#endif

#include "bf16.h" /* after the target pragma, so its functions inline into the kernels */

static inline float pow2i(int32_t q) { /* 2^q for q in the normal exponent range */
    const uint32_t u = (uint32_t)(q + 0x7f) << 23;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* SLEEF 3.x xexpf (u10): q = rint(d / ln 2), s = d - q ln 2 (in two parts), a degree-7 polynomial, times 2^q.
 * The reduction runs on d clamped to [-104, 100], where the original's result is overridden anyway. */
static inline float sleef_expf(float d) {
    float c = d > -104.0f ? d : -104.0f; /* NaN -> -104 (and the result NaN through s): no NaN to int */
    c = c < 100.0f ? c : 100.0f;
    const float qf = rintf(c * 1.442695040888963407359924681001892137426645954152985934135449406931f);
    const int32_t q = (int32_t)qf;
    float s = fmaf(qf, -0.693145751953125f, c);
    s = fmaf(qf, -1.428606765330187045e-06f, s);
    float u = 0.000198527617612853646278381f;
    u = fmaf(u, s, 0.00139304355252534151077271f);
    u = fmaf(u, s, 0.00833336077630519866943359f);
    u = fmaf(u, s, 0.0416664853692054748535156f);
    u = fmaf(u, s, 0.166666671633720397949219f);
    u = fmaf(u, s, 0.5f);
    u = 1.0f + fmaf(s * s, u, s);
    u = u * pow2i(q >> 1) * pow2i(q - (q >> 1));
    u = d < -104.0f ? 0.0f : u;
    return d > 100.0f ? INFINITY : u;
}

static inline __attribute__((always_inline)) void silu_row(const void *gate_up, void *out, int64_t row,
                                                          int64_t inter, int bf16) {
    if (bf16) {
        const uint16_t *gate = (const uint16_t *)gate_up + row * 2 * inter, *up = gate + inter;
        uint16_t *o = (uint16_t *)out + row * inter;
#pragma omp simd
        for (int64_t i = 0; i < inter; i++) {
            const float g = from_bf16(gate[i]);
            const float silu = rounded(g / (1.0f + sleef_expf(-g)));
            o[i] = to_bf16(silu * from_bf16(up[i]));
        }
    } else {
        const float *gate = (const float *)gate_up + row * 2 * inter, *up = gate + inter;
        float *o = (float *)out + row * inter;
#pragma omp simd
        for (int64_t i = 0; i < inter; i++) {
            const float g = gate[i];
            const float silu = g / (1.0f + sleef_expf(-g));
            o[i] = silu * up[i];
        }
    }
}

void silu_and_mul(const void *gate_up, void *out, int64_t rows, int64_t inter, int bf16) {
#pragma omp parallel for schedule(static) if (rows * inter >= 16384)
    for (int64_t r = 0; r < rows; r++) {
        if (bf16)
            silu_row(gate_up, out, r, inter, 1);
        else
            silu_row(gate_up, out, r, inter, 0);
    }
}
