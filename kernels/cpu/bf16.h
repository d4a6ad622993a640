/* bfloat16 <-> fp32 for the CPU kernels: a bf16 is the upper half of an fp32, rounded to nearest even as
 * torch rounds. Included by each kernel's .c file (build.py hashes this header into every kernel's key). */
#ifndef FLOWGATE_BF16_H
#define FLOWGATE_BF16_H

#include <stdint.h>
#include <string.h>

static inline float from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* NaN stays a quiet NaN */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline float rounded(float f) { /* f rounded to bf16 (as to_bf16) and back, staying in 32-bit lanes */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u = (u & 0x7fffffffu) > 0x7f800000u ? (u & 0xffff0000u) | 0x400000u
                                        : (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&f, &u, sizeof f);
    return f;
}

#endif
