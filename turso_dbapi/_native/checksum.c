/*
** checksum.c — CRC32C; the spec (rules (1)-(5)) is the header comment of checksum.h.
**
** IMPLEMENTATION NOTES
**   Table path: slicing-by-8, eight 256-entry tables, 8 input bytes per step. Words are
**   assembled byte by byte in little-endian order, so it is correct on any host.
**   Hardware path: the crc32 instruction has a latency of ~3 cycles but issues once per
**   cycle, so one dependent chain uses a third of the unit. tdb_crc32c splits a long
**   buffer into three equal blocks, runs three chains side by side and merges them with
**   "shift" tables: shift_n(c) is the register after feeding n zero bytes from state c
**   (a linear map, applied as four byte lookups). tdb_crc32c_pages needs no merge: it
**   runs three pages in lockstep, one chain each.
**   Block sizes 8192 / 1360 / 256 bytes: 3 x 1360 = 4080 covers a 4 KiB page (the common
**   single-page case in the VFS) with one merge and a 16-byte tail.
*/
#include "checksum.h"

#include <string.h>

#define POLY 0x82F63B78u

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#  include <nmmintrin.h>
#  define TDB_HW_TARGET __attribute__((target("sse4.2")))
#  define TDB_HAVE_HW 1
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
/* ARMv8 CRC32C instructions (not exercised by this project's x86-64 test machines):
   the three spellings below cover compilers with +crc on the command line, clang
   (builtins), and GCC (its arm_acle.h declares the intrinsics under its own pragma). */
#  if defined(__ARM_FEATURE_CRC32)
#    include <arm_acle.h>
#    define TDB_HW_TARGET
#    define HW_CRC64(c, v) __crc32cd((c), (v))
#    define HW_CRC8(c, b) __crc32cb((c), (b))
#  elif defined(__clang__)
#    define TDB_HW_TARGET __attribute__((target("crc")))
#    define HW_CRC64(c, v) __builtin_arm_crc32cd((c), (v))
#    define HW_CRC8(c, b) __builtin_arm_crc32cb((c), (b))
#  else
#    include <arm_acle.h>
#    define TDB_HW_TARGET __attribute__((target("+crc")))
#    define HW_CRC64(c, v) __crc32cd((c), (v))
#    define HW_CRC8(c, b) __crc32cb((c), (b))
#  endif
#  if defined(__linux__)
#    include <sys/auxv.h>
#    ifndef HWCAP_CRC32
#      define HWCAP_CRC32 (1 << 7)
#    endif
#  endif
#  define TDB_HAVE_HW 1
#endif

static uint32_t tab[8][256];   /* slicing-by-8 */
static int hw_detected;        /* the CPU has the instructions (3) */
static int hw_active;          /* ... and they are in use (4) */

/* ---- table path --------------------------------------------------------------------- */

static uint32_t crc_table(uint32_t c, const uint8_t *p, size_t len) {
  while (len >= 8) {
    uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                       (uint32_t)p[3] << 24);
    uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 |
                  (uint32_t)p[7] << 24;
    c = tab[7][lo & 0xff] ^ tab[6][(lo >> 8) & 0xff] ^ tab[5][(lo >> 16) & 0xff] ^
        tab[4][lo >> 24] ^ tab[3][hi & 0xff] ^ tab[2][(hi >> 8) & 0xff] ^
        tab[1][(hi >> 16) & 0xff] ^ tab[0][hi >> 24];
    p += 8;
    len -= 8;
  }
  while (len--) c = (c >> 8) ^ tab[0][(c ^ *p++) & 0xff];
  return c;
}

/* ---- hardware path ------------------------------------------------------------------ */

#ifdef TDB_HAVE_HW
#define LONG_BLK 8192
#define MID_BLK 1360
#define SHORT_BLK 256
static uint32_t shift_long[4][256], shift_mid[4][256], shift_short[4][256];

static inline uint32_t shift(const uint32_t t[4][256], uint32_t c) {
  return t[0][c & 0xff] ^ t[1][(c >> 8) & 0xff] ^ t[2][(c >> 16) & 0xff] ^ t[3][c >> 24];
}

static inline uint64_t load64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, 8); /* unaligned-safe; both targets are little-endian */
  return v;
}

#if defined(__x86_64__)
TDB_HW_TARGET static inline uint32_t hw64(uint32_t c, const uint8_t *p) {
  return (uint32_t)_mm_crc32_u64(c, load64(p));
}
TDB_HW_TARGET static inline uint32_t hw8(uint32_t c, uint8_t b) { return _mm_crc32_u8(c, b); }
#else
TDB_HW_TARGET static inline uint32_t hw64(uint32_t c, const uint8_t *p) {
  return HW_CRC64(c, load64(p));
}
TDB_HW_TARGET static inline uint32_t hw8(uint32_t c, uint8_t b) { return HW_CRC8(c, b); }
#endif

/* Three chains over blocks of n bytes, merged; consumes whole 3n-byte groups. */
#define THREE_WAY(n, table)                                         \
  while (len >= 3 * (size_t)(n)) {                                  \
    uint32_t c1 = 0, c2 = 0;                                        \
    const uint8_t *end = p + (n);                                   \
    do {                                                            \
      c = hw64(c, p);                                               \
      c1 = hw64(c1, p + (n));                                       \
      c2 = hw64(c2, p + 2 * (n));                                   \
      p += 8;                                                       \
    } while (p < end);                                              \
    c = shift(table, shift(table, c) ^ c1) ^ c2;                    \
    p += 2 * (n);                                                   \
    len -= 3 * (size_t)(n);                                         \
  }

TDB_HW_TARGET static uint32_t crc_hw(uint32_t c, const uint8_t *p, size_t len) {
  THREE_WAY(LONG_BLK, shift_long)
  THREE_WAY(MID_BLK, shift_mid)
  THREE_WAY(SHORT_BLK, shift_short)
  for (; len >= 8; len -= 8, p += 8) c = hw64(c, p);
  while (len--) c = hw8(c, *p++);
  return c;
}

/* Three pages at a time, one independent chain each (2). */
TDB_HW_TARGET static void pages_hw(const uint8_t *buf, size_t ps, size_t n, uint32_t *out) {
  size_t i = 0, words = ps / 8;
  for (; i + 3 <= n; i += 3) {
    const uint8_t *a = buf + i * ps, *b = a + ps, *d = b + ps;
    uint32_t ca = 0xFFFFFFFFu, cb = 0xFFFFFFFFu, cd = 0xFFFFFFFFu;
    for (size_t w = 0; w < words; w++, a += 8, b += 8, d += 8) {
      ca = hw64(ca, a);
      cb = hw64(cb, b);
      cd = hw64(cd, d);
    }
    for (size_t r = ps % 8; r; r--) {
      ca = hw8(ca, *a++);
      cb = hw8(cb, *b++);
      cd = hw8(cd, *d++);
    }
    out[i] = ~ca;
    out[i + 1] = ~cb;
    out[i + 2] = ~cd;
  }
  for (; i < n; i++) out[i] = ~crc_hw(0xFFFFFFFFu, buf + i * ps, ps);
}

/* GF(2) 32x32 matrices as 32 column words: column k is the image of bit k. */
static uint32_t gf2_apply(const uint32_t *m, uint32_t v) {
  uint32_t r = 0;
  for (int k = 0; v; k++, v >>= 1)
    if (v & 1) r ^= m[k];
  return r;
}

static void gf2_mul(uint32_t *dst, const uint32_t *a, const uint32_t *b) { /* dst = a*b */
  uint32_t t[32];
  for (int k = 0; k < 32; k++) t[k] = gf2_apply(a, b[k]);
  memcpy(dst, t, sizeof t);
}

/* t[j][b] = register after n zero bytes from state (b << 8j). */
static void build_shift(uint32_t t[4][256], size_t n) {
  uint32_t base[32], acc[32];
  for (int k = 0; k < 32; k++) { /* one zero byte */
    uint32_t c = 1u << k;
    base[k] = (c >> 8) ^ tab[0][c & 0xff];
    acc[k] = 1u << k; /* identity */
  }
  for (; n; n >>= 1) { /* acc = base^n by squaring */
    if (n & 1) gf2_mul(acc, acc, base);
    gf2_mul(base, base, base);
  }
  for (int j = 0; j < 4; j++)
    for (uint32_t b = 0; b < 256; b++) t[j][b] = gf2_apply(acc, b << (8 * j));
}

static int cpu_has_crc(void) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("sse4.2") ? 1 : 0;
#elif defined(__linux__)
  return (getauxval(AT_HWCAP) & HWCAP_CRC32) ? 1 : 0;
#elif defined(__APPLE__) || defined(__ARM_FEATURE_CRC32)
  return 1; /* every Apple arm64 CPU has CRC32; else the compiler was told it is there */
#else
  return 0; /* no portable way to ask: stay on tables */
#endif
}
#endif /* TDB_HAVE_HW */

/* ---- set-up and public entry points ------------------------------------------------- */

__attribute__((constructor)) static void crc_init(void) { /* (5) */
  for (uint32_t b = 0; b < 256; b++) {
    uint32_t c = b;
    for (int k = 0; k < 8; k++) c = (c >> 1) ^ (POLY & (0u - (c & 1)));
    tab[0][b] = c;
  }
  for (uint32_t b = 0; b < 256; b++)
    for (int j = 1; j < 8; j++) tab[j][b] = (tab[j - 1][b] >> 8) ^ tab[0][tab[j - 1][b] & 0xff];
#ifdef TDB_HAVE_HW
  build_shift(shift_long, LONG_BLK);
  build_shift(shift_mid, MID_BLK);
  build_shift(shift_short, SHORT_BLK);
  hw_detected = cpu_has_crc(); /* (3) */
#endif
  hw_active = hw_detected;
}

uint32_t tdb_crc32c(uint32_t crc, const uint8_t *buf, size_t len) { /* (1) */
  if (len == 0) return crc;
#ifdef TDB_HAVE_HW
  if (hw_active) return ~crc_hw(~crc, buf, len);
#endif
  return ~crc_table(~crc, buf, len);
}

void tdb_crc32c_pages(const uint8_t *buf, size_t page_size, size_t n_pages, uint32_t *out) {
#ifdef TDB_HAVE_HW
  if (hw_active) {
    pages_hw(buf, page_size, n_pages, out); /* (2) */
    return;
  }
#endif
  for (size_t i = 0; i < n_pages; i++) out[i] = ~crc_table(0xFFFFFFFFu, buf + i * page_size, page_size);
}

int tdb_crc32c_hw(void) { return hw_active; }

void tdb_crc32c_force_table(int on) { hw_active = on ? 0 : hw_detected; } /* (4) */
