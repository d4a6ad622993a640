/* Paged decode attention on the CPU: one query token per sequence against its K/V, read in place through the
 * block table instead of gathered into a copy (decode is bound by reading the cache, so reading it once is the
 * whole game). One work item per (sequence, KV head): the item's group of query heads shares each K/V row it
 * loads. Softmax and accumulation in fp32.
 *
 * Layouts, all contiguous: q, out [batch, num_heads, head_dim]; caches [num_blocks, block_size, num_kv_heads,
 * head_dim]; block_tables [batch, max_blocks] int32; block_size a power of two. Elements are fp32, or bf16
 * when `bf16` is set. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"

static void load_row(const void *src, int64_t offset, int64_t n, int bf16, float *dst) {
    if (!bf16) {
        memcpy(dst, (const float *)src + offset, sizeof(float) * n);
        return;
    }
    const uint16_t *s = (const uint16_t *)src + offset;
    uint32_t *d = (uint32_t *)dst;
    for (int64_t i = 0; i < n; i++) d[i] = (uint32_t)s[i] << 16;
}

static void store_row(const float *src, int64_t n, int bf16, void *dst, int64_t offset) {
    if (!bf16) {
        memcpy((float *)dst + offset, src, sizeof(float) * n);
        return;
    }
    uint16_t *d = (uint16_t *)dst + offset;
    for (int64_t i = 0; i < n; i++) d[i] = to_bf16(src[i]);
}

static void softmax(float *x, int64_t n) {
    float max = -INFINITY, sum = 0.0f;
    for (int64_t i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    for (int64_t i = 0; i < n; i++) x[i] /= sum;
}

/* Where one (sequence, KV head) item reads: its block table and the element offsets within a block. */
struct item {
    const int32_t *table;
    int64_t len, head_offset, block_size, token_stride, block_stride, head_dim, group, elem;
    int block_shift; /* log2(block_size): a shift, not a division, on every row */
};

static inline int64_t row_offset(const struct item *it, int64_t t) {
    return it->table[t >> it->block_shift] * it->block_stride + (t & (it->block_size - 1)) * it->token_stride
           + it->head_offset;
}

#ifdef __AVX512F__
#include <immintrin.h>
#define MAX_GROUP 16
#define MAX_CHUNKS 16 /* head_dim up to 256, in chunks of 16 floats */

static inline __m512 load16(const void *base, int64_t offset, int bf16) {
    if (!bf16) return _mm512_loadu_ps((const float *)base + offset);
    __m256i half = _mm256_loadu_si256((const __m256i *)((const uint16_t *)base + offset));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16));
}

/* The next block's rows are a jump the hardware prefetcher cannot predict: ask for them a block ahead. */
static inline void prefetch_rows(const void *base, int64_t offset, int64_t rows, int64_t stride, int64_t bytes,
                                 int64_t elem) {
    const char *start = (const char *)base + offset * elem;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t b = 0; b < bytes; b += 64) _mm_prefetch(start + r * stride * elem + b, _MM_HINT_T0);
}

static inline void prefetch_next_block(const struct item *it, const void *cache, int64_t t) {
    if ((t & (it->block_size - 1)) == 0 && t + it->block_size < it->len)
        prefetch_rows(cache, row_offset(it, t + it->block_size), it->block_size, it->token_stride,
                      it->head_dim * it->elem, it->elem);
}

/* scores[g * len + t] = scale * q_g . k_t, fp32 FMAs over chunks of 16. */
static void key_scores_fma(const struct item *it, const void *q, int64_t q_offset, const void *k_cache,
                           float scale, int bf16, float *scores) {
    const int64_t chunks = it->head_dim / 16;
    __m512 queries[MAX_GROUP][MAX_CHUNKS], row[MAX_CHUNKS];
    for (int64_t g = 0; g < it->group; g++)
        for (int64_t c = 0; c < chunks; c++)
            queries[g][c] = _mm512_mul_ps(load16(q, q_offset + g * it->head_dim + c * 16, bf16), _mm512_set1_ps(scale));
    for (int64_t t = 0; t < it->len; t++) {
        prefetch_next_block(it, k_cache, t);
        const int64_t offset = row_offset(it, t);
        for (int64_t c = 0; c < chunks; c++) row[c] = load16(k_cache, offset + c * 16, bf16);
        for (int64_t g = 0; g < it->group; g++) {
            __m512 dot = _mm512_setzero_ps();
            for (int64_t c = 0; c < chunks; c++) dot = _mm512_fmadd_ps(queries[g][c], row[c], dot);
            scores[g * it->len + t] = _mm512_reduce_add_ps(dot);
        }
    }
}

#ifdef __AVX512BF16__
/* bf16 with head_dim % 32 == 0: vdpbf16ps multiplies bf16 pairs straight from the cache, no widening. */
static void key_scores_dpbf16(const struct item *it, const uint16_t *q, int64_t q_offset, const uint16_t *k_cache,
                              float scale, float *scores) {
    const int64_t chunks = it->head_dim / 32;
    __m512bh queries[MAX_GROUP][MAX_CHUNKS / 2], row[MAX_CHUNKS / 2];
    for (int64_t g = 0; g < it->group; g++)
        for (int64_t c = 0; c < chunks; c++)
            queries[g][c] = (__m512bh)_mm512_loadu_si512(q + q_offset + g * it->head_dim + c * 32);
    for (int64_t t = 0; t < it->len; t++) {
        prefetch_next_block(it, k_cache, t);
        const int64_t offset = row_offset(it, t);
        for (int64_t c = 0; c < chunks; c++) row[c] = (__m512bh)_mm512_loadu_si512(k_cache + offset + c * 32);
        for (int64_t g = 0; g < it->group; g++) {
            __m512 dot = _mm512_setzero_ps();
            for (int64_t c = 0; c < chunks; c++) dot = _mm512_dpbf16_ps(dot, queries[g][c], row[c]);
            scores[g * it->len + t] = _mm512_reduce_add_ps(dot) * scale;
        }
    }
}
#endif

/* out_g = sum_t p[g, t] v_t, the group's accumulators in registers. Inlined per dtype (see the caller), so
 * the element width is a constant in the hot loop. */
static inline __attribute__((always_inline)) void weighted_values(const struct item *it, const float *probs,
                                                                 const void *v_cache, int bf16, void *out,
                                                                 int64_t out_offset) {
    const int64_t chunks = it->head_dim / 16;
    __m512 acc[MAX_GROUP][MAX_CHUNKS], row[MAX_CHUNKS];
    for (int64_t g = 0; g < it->group; g++)
        for (int64_t c = 0; c < chunks; c++) acc[g][c] = _mm512_setzero_ps();
    for (int64_t t = 0; t < it->len; t++) {
        prefetch_next_block(it, v_cache, t);
        const int64_t offset = row_offset(it, t);
        for (int64_t c = 0; c < chunks; c++) row[c] = load16(v_cache, offset + c * 16, bf16);
        for (int64_t g = 0; g < it->group; g++) {
            const __m512 p = _mm512_set1_ps(probs[g * it->len + t]);
            for (int64_t c = 0; c < chunks; c++) acc[g][c] = _mm512_fmadd_ps(p, row[c], acc[g][c]);
        }
    }
    float result[16 * MAX_CHUNKS];
    for (int64_t g = 0; g < it->group; g++) {
        for (int64_t c = 0; c < chunks; c++) _mm512_storeu_ps(result + c * 16, acc[g][c]);
        store_row(result, it->head_dim, bf16, out, out_offset + g * it->head_dim);
    }
}

/* One (sequence, KV head) with head_dim % 16 == 0. */
static void decode_item_avx512(const struct item *it, const void *q, int64_t q_offset, const void *k_cache,
                               const void *v_cache, float scale, int bf16, float *scores, void *out) {
#ifdef __AVX512BF16__
    if (bf16 && it->head_dim % 32 == 0)
        key_scores_dpbf16(it, q, q_offset, k_cache, scale, scores);
    else
#endif
        key_scores_fma(it, q, q_offset, k_cache, scale, bf16, scores);
    for (int64_t g = 0; g < it->group; g++) softmax(scores + g * it->len, it->len);
    if (bf16)
        weighted_values(it, scores, v_cache, 1, out, q_offset);
    else
        weighted_values(it, scores, v_cache, 0, out, q_offset);
}
#endif

/* The same for any head_dim and group, without vector intrinsics. */
static void decode_item_portable(const struct item *it, const void *q, int64_t q_offset, const void *k_cache,
                                 const void *v_cache, float scale, int bf16, float *scores, void *out) {
    const int64_t head_dim = it->head_dim, group = it->group, len = it->len;
    float queries[group * head_dim], acc[group * head_dim], row[head_dim];
    load_row(q, q_offset, group * head_dim, bf16, queries);
    for (int64_t i = 0; i < group * head_dim; i++) queries[i] *= scale;
    for (int64_t t = 0; t < len; t++) {
        load_row(k_cache, row_offset(it, t), head_dim, bf16, row);
        for (int64_t g = 0; g < group; g++) {
            const float *qg = queries + g * head_dim;
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (int64_t d = 0; d < head_dim; d++) s += qg[d] * row[d];
            scores[g * len + t] = s;
        }
    }
    for (int64_t g = 0; g < group; g++) softmax(scores + g * len, len);
    memset(acc, 0, sizeof acc);
    for (int64_t t = 0; t < len; t++) {
        load_row(v_cache, row_offset(it, t), head_dim, bf16, row);
        for (int64_t g = 0; g < group; g++) {
            const float p = scores[g * len + t];
            float *ag = acc + g * head_dim;
#pragma omp simd
            for (int64_t d = 0; d < head_dim; d++) ag[d] += p * row[d];
        }
    }
    store_row(acc, group * head_dim, bf16, out, q_offset);
}

void paged_attention_decode(const void *q, const void *k_cache, const void *v_cache, const int32_t *block_tables,
                            const int32_t *context_lens, void *out, int64_t batch, int64_t num_heads,
                            int64_t num_kv_heads, int64_t head_dim, int64_t block_size, int64_t max_blocks,
                            float scale, int bf16) {
    const int64_t group = num_heads / num_kv_heads;
    const int64_t token_stride = num_kv_heads * head_dim, block_stride = block_size * token_stride;
    /* A sequence's KV heads on one thread, in turn: its blocks then stream through one core's caches. Unless
     * that leaves threads idle. */
    const int64_t chunk = batch >= 4 * omp_get_max_threads() ? num_kv_heads : 1;
    /* Small work (one sequence of a few hundred tokens: ~30 us) runs on this thread: waking the team costs more,
     * and on a shared host a descheduled peer made a batch-1 call 44-253 us instead of 32. */
    int64_t work = 0;
    for (int64_t b = 0; b < batch; b++) work += context_lens[b];
#pragma omp parallel if (work * num_kv_heads >= 4096)
    {
        float *scores = NULL;
        int64_t capacity = 0;
#pragma omp for schedule(dynamic, chunk)
        for (int64_t item = 0; item < batch * num_kv_heads; item++) {
            const int64_t b = item / num_kv_heads, h = item % num_kv_heads, len = context_lens[b];
            const int64_t q_offset = (b * num_heads + h * group) * head_dim;
            if (len > capacity) {
                capacity = len;
                scores = realloc(scores, sizeof(float) * group * capacity);
            }
            const struct item it = {block_tables + b * max_blocks, len, h * head_dim, block_size, token_stride,
                                    block_stride, head_dim, group, bf16 ? 2 : 4, __builtin_ctzll(block_size)};
#ifdef __AVX512F__
            if (head_dim % 16 == 0 && head_dim <= 16 * MAX_CHUNKS && group <= MAX_GROUP) {
                decode_item_avx512(&it, q, q_offset, k_cache, v_cache, scale, bf16, scores, out);
                continue;
            }
#endif
            decode_item_portable(&it, q, q_offset, k_cache, v_cache, scale, bf16, scores, out);
        }
        free(scores);
    }
}
