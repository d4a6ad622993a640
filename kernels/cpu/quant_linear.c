/* Weight-only quantized linear on the CPU: y = x W^T + b with W stored as int8 (an fp32 scale) or int4 (an fp32
 * scale and offset) per output channel and group of `group_size` input channels.
 * Decode at small batch is bound by reading W, so W is read once per call, from a layout that streams:
 *
 *   packed W: [N / 64 blocks][K][64 output channels]   int8: one byte each; int4: 32 bytes per row, the
 *                                                       low nibble of byte j is channel j, the high one j + 32
 *   int8:  w[n, k] = q * scale[g, n]                    scale [K / group_size][N_pad], g = k / group_size
 *   int4:  w[n, k] = q * scale[g, n] + offset[g, n]     offset as scale (AWQ: -zero * scale; GGUF Q4_1: min)
 *
 * Each (block of 64 channels, tile of up to 6 rows of x) keeps its 6 x 64 sums in 24 AVX-512 registers: per k,
 * the row of 64 weights is widened to fp32 once (q * s, or q * s + o in one rounding, as the torch reference and
 * as AWQ's (q - z) * s or GGUF's d * q + m) and meets each x[m, k] in one broadcast FMA, so only the summation
 * order differs from x @ W^T in fp32, and it is the same for every row whatever the batch. Blocks (and row tiles) run in parallel; a block's
 * weights stay in cache while its row tiles pass over them.
 *
 * x, y fp32 contiguous [M, K] / [M, N]; bias fp32 [N] or NULL; N_pad = N rounded up to 64 (zero padding). */
#include <stdint.h>
#include <string.h>

#define NB 64 /* output channels per block */
#define MT 6  /* rows of x per tile */

#ifdef __AVX512F__
#include <immintrin.h>

/* 64 fp32 weights of row k of a block: q widened (and for int4 scaled and offset). */
static inline void widen_int8(const int8_t *row, const float *scale, __m512 w[4]) {
    for (int j = 0; j < 4; j++)
        w[j] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(row + 16 * j)))),
                             _mm512_loadu_ps(scale + 16 * j));
}

static inline void widen_int4(const uint8_t *row, const float *scale, const float *offset, __m512 w[4]) {
    const __m256i bytes = _mm256_loadu_si256((const __m256i *)row);
    const __m256i mask = _mm256_set1_epi8(0x0f);
    const __m256i lo = _mm256_and_si256(bytes, mask), hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), mask);
    const __m128i parts[4] = {_mm256_castsi256_si128(lo), _mm256_extracti128_si256(lo, 1),
                              _mm256_castsi256_si128(hi), _mm256_extracti128_si256(hi, 1)};
    for (int j = 0; j < 4; j++)
        w[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(parts[j])), _mm512_loadu_ps(scale + 16 * j),
                               _mm512_loadu_ps(offset + 16 * j));
}

/* Inlined with a constant `rows` (see tile below): the accumulators then live in registers. */
static inline __attribute__((always_inline)) void tile_rows(const float *x, const uint8_t *block, const float *scale,
                                                           const float *offset, float *y, const float *bias,
                                                           const int rows, int64_t n0, int64_t N, int64_t N_pad,
                                                           int64_t K, int64_t group_size, int int4) {
    __m512 acc[MT][4];
    for (int m = 0; m < rows; m++)
        for (int j = 0; j < 4; j++) acc[m][j] = _mm512_setzero_ps();
    for (int64_t g0 = 0; g0 < K; g0 += group_size) { /* by group: no division per k */
        const float *s = scale + (g0 / group_size) * N_pad + n0, *o = int4 ? offset + (s - scale) : NULL;
        for (int64_t k = g0; k < g0 + group_size; k++) {
            __m512 w[4];
            if (int4)
                widen_int4(block + k * (NB / 2), s, o, w);
            else
                widen_int8((const int8_t *)block + k * NB, s, w);
            for (int m = 0; m < rows; m++) {
                const __m512 xv = _mm512_set1_ps(x[m * K + k]);
                for (int j = 0; j < 4; j++) acc[m][j] = _mm512_fmadd_ps(xv, w[j], acc[m][j]);
            }
        }
    }
    for (int j = 0; j < 4; j++) {
        const int64_t n = n0 + 16 * j;
        if (n >= N) break;
        const __mmask16 keep = N - n >= 16 ? 0xffff : (__mmask16)((1u << (N - n)) - 1);
        const __m512 b = bias ? _mm512_maskz_loadu_ps(keep, bias + n) : _mm512_setzero_ps();
        for (int m = 0; m < rows; m++) _mm512_mask_storeu_ps(y + m * N + n, keep, _mm512_add_ps(acc[m][j], b));
    }
}

static void tile(const float *x, const uint8_t *block, const float *scale, const float *offset, float *y,
                 const float *bias, int64_t rows, int64_t n0, int64_t N, int64_t N_pad, int64_t K,
                 int64_t group_size, int int4) {
#define TILE(R) tile_rows(x, block, scale, offset, y, bias, R, n0, N, N_pad, K, group_size, int4)
    switch (rows) {
    case 1: TILE(1); break;
    case 2: TILE(2); break;
    case 3: TILE(3); break;
    case 4: TILE(4); break;
    case 5: TILE(5); break;
    default: TILE(MT); break;
    }
#undef TILE
}

#else /* portable: the same order of operations in plain C (vectorised by the compiler where it can) */

static void tile(const float *x, const uint8_t *block, const float *scale, const float *offset, float *y,
                 const float *bias, int64_t rows, int64_t n0, int64_t N, int64_t N_pad, int64_t K,
                 int64_t group_size, int int4) {
    float acc[MT][NB];
    memset(acc, 0, sizeof acc);
    for (int64_t k = 0; k < K; k++) {
        float w[NB];
        const float *s = scale + (k / group_size) * N_pad + n0;
        if (int4) {
            const uint8_t *row = block + k * (NB / 2);
            const float *o = offset + (s - scale);
            for (int j = 0; j < NB; j++) {
                const int q = j < NB / 2 ? row[j] & 0x0f : row[j - NB / 2] >> 4;
                w[j] = __builtin_fmaf((float)q, s[j], o[j]);
            }
        } else {
            const int8_t *row = (const int8_t *)block + k * NB;
            for (int j = 0; j < NB; j++) w[j] = (float)row[j] * s[j];
        }
        for (int64_t m = 0; m < rows; m++) {
            const float xv = x[m * K + k];
#pragma omp simd
            for (int j = 0; j < NB; j++) acc[m][j] = __builtin_fmaf(xv, w[j], acc[m][j]);
        }
    }
    for (int64_t m = 0; m < rows; m++)
        for (int j = 0; j < NB && n0 + j < N; j++)
            y[m * N + n0 + j] = acc[m][j] + (bias ? bias[n0 + j] : 0.0f);
}

#endif

/* scale/offset as described above (offset NULL for int8). */
void quant_linear(const float *x, const uint8_t *packed, const float *scale, const float *offset,
                  const float *bias, float *y, int64_t M, int64_t N, int64_t K, int64_t group_size, int int4) {
    const int64_t blocks = (N + NB - 1) / NB, N_pad = blocks * NB, tiles = (M + MT - 1) / MT;
    const int64_t block_bytes = int4 ? K * NB / 2 : K * NB;
    /* block-major: consecutive items of a thread share a block, whose weights then stay in cache */
#pragma omp parallel for schedule(static) if (blocks * tiles > 1 && M * N * K >= 65536)
    for (int64_t item = 0; item < blocks * tiles; item++) {
        const int64_t b = item / tiles, t = item % tiles;
        const int64_t m0 = t * MT, rows = M - m0 < MT ? M - m0 : MT;
        tile(x + m0 * K, packed + b * block_bytes, scale, offset, y + m0 * N, bias, rows, b * NB, N, N_pad, K,
             group_size, int4);
    }
}
