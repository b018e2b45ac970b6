/* SipHash-2-4 with 64-bit output (Aumasson & Bernstein, "SipHash: a fast short-input PRF",
 * INDOCRYPT 2012), written from the paper's description.
 *
 * Why SipHash: RFC 6528 section 3 asks for a keyed pseudorandom function F over the 4-tuple
 * (it cites MD5; any PRF that an off-path attacker cannot invert will do). SipHash is a PRF
 * built for short inputs like a 12-byte 4-tuple, and it costs tens of nanoseconds.
 *
 * The algorithm (paper section 2):
 *   - the 128-bit key is two little-endian 64-bit words k0, k1;
 *   - the state v0..v3 starts as k0/k1 XORed with the ASCII of "somepseudorandomlygeneratedbytes";
 *   - the message is read as little-endian 64-bit words; the last word holds the 0..7 leftover
 *     bytes and, in its top byte, the message length mod 256;
 *   - each word m is absorbed as: v3 ^= m; c=2 SipRounds; v0 ^= m;
 *   - finalisation: v2 ^= 0xff; d=4 SipRounds; the output is v0 ^ v1 ^ v2 ^ v3.
 * The paper prints the output as 8 bytes, least significant first: the test vector
 * "a129ca6149be45e5" is the value this function returns for key 00..0f, message 00..0e.
 */
#ifndef FASTTCP_SIPHASH_H
#define FASTTCP_SIPHASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Little-endian 64-bit load at any alignment. */
static inline uint64_t ft_sip_load64le(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

#define FT_SIP_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

/* One SipRound: the ARX network of the paper's figure 2.1. */
#define FT_SIPROUND                                                      \
    do {                                                                 \
        v0 += v1; v1 = FT_SIP_ROTL(v1, 13); v1 ^= v0; v0 = FT_SIP_ROTL(v0, 32); \
        v2 += v3; v3 = FT_SIP_ROTL(v3, 16); v3 ^= v2;                    \
        v0 += v3; v3 = FT_SIP_ROTL(v3, 21); v3 ^= v0;                    \
        v2 += v1; v1 = FT_SIP_ROTL(v1, 17); v1 ^= v2; v2 = FT_SIP_ROTL(v2, 32); \
    } while (0)

/* SipHash-2-4 of n bytes at p under the key (k0, k1) (already loaded little-endian, so a
 * caller hashing many messages under one key loads it once). */
static inline uint64_t ft_siphash24(uint64_t k0, uint64_t k1, const unsigned char *p, size_t n) {
    uint64_t v0 = k0 ^ 0x736f6d6570736575ULL; /* "somepseu" */
    uint64_t v1 = k1 ^ 0x646f72616e646f6dULL; /* "dorandom" */
    uint64_t v2 = k0 ^ 0x6c7967656e657261ULL; /* "lygenera" */
    uint64_t v3 = k1 ^ 0x7465646279746573ULL; /* "tedbytes" */
    const unsigned char *end = p + (n & ~(size_t)7);
    uint64_t m;
    size_t left = n & 7;

    for (; p != end; p += 8) {
        m = ft_sip_load64le(p);
        v3 ^= m;
        FT_SIPROUND;
        FT_SIPROUND;
        v0 ^= m;
    }

    /* Last word: leftover bytes little-endian, length mod 256 in the top byte. */
    m = (uint64_t)(n & 0xff) << 56;
    switch (left) {
    case 7: m |= (uint64_t)p[6] << 48; /* fall through */
    case 6: m |= (uint64_t)p[5] << 40; /* fall through */
    case 5: m |= (uint64_t)p[4] << 32; /* fall through */
    case 4: m |= (uint64_t)p[3] << 24; /* fall through */
    case 3: m |= (uint64_t)p[2] << 16; /* fall through */
    case 2: m |= (uint64_t)p[1] << 8;  /* fall through */
    case 1: m |= (uint64_t)p[0];       /* fall through */
    case 0: break;
    }
    v3 ^= m;
    FT_SIPROUND;
    FT_SIPROUND;
    v0 ^= m;

    v2 ^= 0xff;
    FT_SIPROUND;
    FT_SIPROUND;
    FT_SIPROUND;
    FT_SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

#undef FT_SIPROUND
#undef FT_SIP_ROTL

#endif /* FASTTCP_SIPHASH_H */
