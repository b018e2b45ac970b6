/* Internet checksum (RFC 1071) at memory speed.
 *
 * The one's complement sum is byte-order independent (RFC 1071 section 2(B)): we add the
 * buffer as native (little-endian) words into a wide accumulator, fold to 16 bits at the end,
 * and the folded value stored natively is the right field in network order.
 *
 * Three implementations, picked once at run time:
 *   - AVX2: 32-bit lanes widened into 64-bit accumulators, 128 bytes per iteration
 *     (no carries to propagate until the final fold; ~40-55 GB/s on this CPU class);
 *   - x86-64 scalar: an add-with-carry chain over 64-bit words (~20 GB/s);
 *   - portable C: 32-bit loads into a 64-bit accumulator, unrolled.
 * All loads go through memcpy, so any alignment and any length are fine.
 */
#ifndef FASTTCP_CSUM_H
#define FASTTCP_CSUM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FT_X86_64 1
#endif

static inline uint64_t ft_load64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t ft_load32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint16_t ft_load16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return v; }

/* 64-bit one's complement addition (end-around carry). */
static inline uint64_t ft_add64(uint64_t a, uint64_t b) {
    uint64_t s = a + b;
    return s + (s < a);
}

/* Fold a 64-bit partial sum to 16 bits (still native order, not complemented). */
static inline uint16_t ft_csum_fold(uint64_t s) {
    s = (s & 0xffffffffULL) + (s >> 32);
    s = (s & 0xffffffffULL) + (s >> 32);
    s = (s & 0xffffULL) + (s >> 16);
    s = (s & 0xffffULL) + (s >> 16);
    return (uint16_t)s;
}

/* Sum of the tail (< 8 bytes) in native order; an odd last byte is the low byte of a
 * little-endian word, i.e. the high byte of the big-endian word padded with zero. */
static inline uint64_t ft_csum_tail(const unsigned char *p, size_t n) {
    uint64_t s = 0;
    if (n & 4) { s += ft_load32(p); p += 4; }
    if (n & 2) { s += ft_load16(p); p += 2; }
    if (n & 1) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        s += *p;
#else
        s += (uint64_t)(*p) << 8;
#endif
    }
    return s;
}

static uint64_t ft_csum_portable(const unsigned char *p, size_t n, uint64_t acc) {
    uint64_t a = 0, b = 0, c = 0, d = 0;
    while (n >= 32) {
        a += (uint64_t)ft_load32(p) + ft_load32(p + 16);
        b += (uint64_t)ft_load32(p + 4) + ft_load32(p + 20);
        c += (uint64_t)ft_load32(p + 8) + ft_load32(p + 24);
        d += (uint64_t)ft_load32(p + 12) + ft_load32(p + 28);
        p += 32; n -= 32;
    }
    while (n >= 8) { a += (uint64_t)ft_load32(p) + ft_load32(p + 4); p += 8; n -= 8; }
    a += ft_csum_tail(p, n);
    /* Each accumulator holds < 2^33 * (bytes/32): no overflow below 2^30 bytes. */
    acc = ft_add64(acc, a);
    acc = ft_add64(acc, b);
    acc = ft_add64(acc, c);
    return ft_add64(acc, d);
}

#ifdef FT_X86_64
/* Add-with-carry chain, 64 bytes per iteration (as Linux's x86-64 csum_partial). */
static uint64_t ft_csum_adc(const unsigned char *p, size_t n, uint64_t acc) {
    size_t blocks = n >> 6;
    if (blocks) {
        __asm__ volatile(
            "1:\n\t"
            "addq 0(%[p]), %[s]\n\t"
            "adcq 8(%[p]), %[s]\n\t"
            "adcq 16(%[p]), %[s]\n\t"
            "adcq 24(%[p]), %[s]\n\t"
            "adcq 32(%[p]), %[s]\n\t"
            "adcq 40(%[p]), %[s]\n\t"
            "adcq 48(%[p]), %[s]\n\t"
            "adcq 56(%[p]), %[s]\n\t"
            "adcq $0, %[s]\n\t"
            "leaq 64(%[p]), %[p]\n\t"
            "decq %[b]\n\t"
            "jnz 1b\n\t"
            : [s] "+r"(acc), [p] "+r"(p), [b] "+r"(blocks)
            :
            : "cc", "memory");
        n &= 63;
    }
    while (n >= 8) { acc = ft_add64(acc, ft_load64(p)); p += 8; n -= 8; }
    return ft_add64(acc, ft_csum_tail(p, n));
}

__attribute__((target("avx2")))
static uint64_t ft_csum_avx2(const unsigned char *p, size_t n, uint64_t acc) {
    if (n >= 128) {
        const __m256i lo32 = _mm256_set1_epi64x(0xffffffffLL);
        __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
        while (n >= 128) {
            __m256i v0 = _mm256_loadu_si256((const __m256i *)(p));
            __m256i v1 = _mm256_loadu_si256((const __m256i *)(p + 32));
            __m256i v2 = _mm256_loadu_si256((const __m256i *)(p + 64));
            __m256i v3 = _mm256_loadu_si256((const __m256i *)(p + 96));
            /* Widen each 32-bit lane into a 64-bit accumulator: low and high halves. */
            s0 = _mm256_add_epi64(s0, _mm256_and_si256(v0, lo32));
            s1 = _mm256_add_epi64(s1, _mm256_srli_epi64(v0, 32));
            s2 = _mm256_add_epi64(s2, _mm256_and_si256(v1, lo32));
            s3 = _mm256_add_epi64(s3, _mm256_srli_epi64(v1, 32));
            s0 = _mm256_add_epi64(s0, _mm256_and_si256(v2, lo32));
            s1 = _mm256_add_epi64(s1, _mm256_srli_epi64(v2, 32));
            s2 = _mm256_add_epi64(s2, _mm256_and_si256(v3, lo32));
            s3 = _mm256_add_epi64(s3, _mm256_srli_epi64(v3, 32));
            p += 128; n -= 128;
        }
        /* Lanes hold < 2^32 * (bytes/128): far from overflow for any IPv4 packet. */
        __m256i s = _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3));
        uint64_t lanes[4];
        _mm256_storeu_si256((__m256i *)lanes, s);
        acc = ft_add64(acc, lanes[0]);
        acc = ft_add64(acc, lanes[1]);
        acc = ft_add64(acc, lanes[2]);
        acc = ft_add64(acc, lanes[3]);
    }
    while (n >= 8) { acc = ft_add64(acc, ft_load64(p)); p += 8; n -= 8; }
    return ft_add64(acc, ft_csum_tail(p, n));
}
#endif

typedef uint64_t (*ft_csum_fn)(const unsigned char *, size_t, uint64_t);

static ft_csum_fn ft_csum_impl = 0;
static const char *ft_csum_impl_name = "unselected";

static void ft_csum_select(int force) {
    /* force: 0 = best available, 1 = portable C, 2 = scalar add-with-carry, 3 = AVX2 */
    ft_csum_impl = ft_csum_portable;
    ft_csum_impl_name = "portable";
#ifdef FT_X86_64
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2");
    if (force == 2 || (force == 0 && !avx2) || (force == 3 && !avx2)) {
        ft_csum_impl = ft_csum_adc;
        ft_csum_impl_name = "adc";
    }
    if ((force == 0 || force == 3) && avx2) {
        ft_csum_impl = ft_csum_avx2;
        ft_csum_impl_name = "avx2";
    }
#else
    (void)force;
#endif
}

/* Partial (unfolded, uncomplemented) sum of buf[0:n] added to acc. Small buffers take the
 * inline 8-byte loop: an indirect call costs more than summing a 20-byte header. */
static inline uint64_t ft_csum_partial(const unsigned char *p, size_t n, uint64_t acc) {
    if (n < 64) {
        while (n >= 8) { acc = ft_add64(acc, ft_load64(p)); p += 8; n -= 8; }
        return ft_add64(acc, ft_csum_tail(p, n));
    }
    return ft_csum_impl(p, n, acc);
}

/* The IPv4 pseudo-header (RFC 9293 section 3.1; RFC 768) for addresses as they sit in the
 * packet (network order in memory, loaded natively). */
static inline uint64_t ft_pseudo_sum_mem(uint32_t src_mem, uint32_t dst_mem, uint8_t proto,
                                         uint32_t length) {
    uint64_t s = (uint64_t)src_mem + dst_mem;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    s += (uint64_t)__builtin_bswap16((uint16_t)proto) + __builtin_bswap16((uint16_t)length);
#else
    s += (uint64_t)proto + (uint16_t)length;
#endif
    return s;
}

/* The IPv6 pseudo-header (RFC 8200 section 8.1): the source and destination addresses,
 * 32 contiguous bytes as they sit in the IPv6 header, the 32-bit upper-layer length and
 * the next-header value in a 32-bit word (three zero bytes first). */
static inline uint64_t ft_pseudo6_sum(const unsigned char *addrs, uint8_t proto,
                                      uint32_t length) {
    uint64_t s = ft_csum_partial(addrs, 32, 0);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    s += (uint64_t)__builtin_bswap16((uint16_t)(length >> 16))
         + __builtin_bswap16((uint16_t)length) + __builtin_bswap16((uint16_t)proto);
#else
    s += (uint64_t)(length >> 16) + (uint16_t)length + (uint64_t)proto;
#endif
    return s;
}

/* Branch hints for the parser: the IPv6 branch is laid out away from the IPv4 path. */
#define ft_unlikely(x) __builtin_expect(!!(x), 0)

#endif /* FASTTCP_CSUM_H */
