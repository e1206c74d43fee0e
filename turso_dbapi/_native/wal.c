/*
** wal.c — SQLite WAL checksum, parser and writer; the spec (rules (1)-(7)) is the
** header comment of wal.h.
**
** IMPLEMENTATION NOTES
**   The checksum is a serial chain (each step needs the previous sums), so speed comes
**   from cheap loads: two u32 loads per 8 bytes via memcpy, plus a byte swap when the
**   WAL's word order differs from the host's. Everything works on the caller's buffer:
**   one call validates a whole WAL, with no callback per frame.
*/
#include "wal.h"

#include <string.h>

#define WAL_MAGIC 0x377f0682u
#define WAL_VERSION 3007000u
#define WAL_HDR 32u
#define FRAME_HDR 24u

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define HOST_BE 1
#else
#define HOST_BE 0
#endif

static uint32_t get_be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static int page_size_ok(uint32_t ps) {
  return ps >= 512 && ps <= 65536 && (ps & (ps - 1)) == 0;
}

/* (1) len is a multiple of 8 (checked by callers). */
static void cksum(int big_endian, const uint8_t *p, size_t len, uint32_t *s) {
  uint32_t s0 = s[0], s1 = s[1], a, b;
  const uint8_t *end = p + len;
  if (!big_endian == !HOST_BE) {
    for (; p < end; p += 8) {
      memcpy(&a, p, 4);
      memcpy(&b, p + 4, 4);
      s0 += a + s1;
      s1 += b + s0;
    }
  } else {
    for (; p < end; p += 8) {
      memcpy(&a, p, 4);
      memcpy(&b, p + 4, 4);
      s0 += __builtin_bswap32(a) + s1;
      s1 += __builtin_bswap32(b) + s0;
    }
  }
  s[0] = s0;
  s[1] = s1;
}

int tdb_wal_checksum(int big_endian, const uint8_t *buf, size_t len, uint32_t *s) {
  if (len % 8 != 0 || (len && !buf) || !s) return TDB_WAL_EARG; /* (1) */
  cksum(big_endian, buf, len, s);
  return TDB_WAL_OK;
}

int tdb_wal_read_header(const uint8_t *buf, size_t len, tdb_wal_header *hdr) {
  uint32_t s[2] = {0, 0};
  if (!hdr || (len && !buf)) return TDB_WAL_EARG;
  memset(hdr, 0, sizeof *hdr);
  if (len < WAL_HDR) return TDB_WAL_ETRUNC; /* (2) */
  hdr->magic = get_be32(buf);
  hdr->version = get_be32(buf + 4);
  hdr->page_size = get_be32(buf + 8);
  hdr->checkpoint_seq = get_be32(buf + 12);
  hdr->salt1 = get_be32(buf + 16);
  hdr->salt2 = get_be32(buf + 20);
  hdr->cksum1 = get_be32(buf + 24);
  hdr->cksum2 = get_be32(buf + 28);
  if ((hdr->magic & ~1u) != WAL_MAGIC) return TDB_WAL_EMAGIC;
  if (!page_size_ok(hdr->page_size)) return TDB_WAL_EPAGESIZE;
  cksum(hdr->magic & 1, buf, WAL_HDR - 8, s);
  if (s[0] != hdr->cksum1 || s[1] != hdr->cksum2) return TDB_WAL_ECKSUM;
  if (hdr->version != WAL_VERSION) return TDB_WAL_EVERSION;
  return TDB_WAL_OK;
}

size_t tdb_wal_max_frames(uint32_t page_size, size_t len) { /* (5) */
  if (!page_size_ok(page_size) || len < WAL_HDR) return 0;
  return (len - WAL_HDR) / (FRAME_HDR + (size_t)page_size);
}

int tdb_wal_scan(const uint8_t *buf, size_t len, tdb_wal_header *hdr, uint32_t *pgno,
                 uint32_t *commit, size_t max_frames, tdb_wal_result *res) {
  int rc;
  uint32_t s[2];
  size_t frame, off = WAL_HDR, i = 0;
  int be;
  if (!res) return TDB_WAL_EARG;
  memset(res, 0, sizeof *res);
  rc = tdb_wal_read_header(buf, len, hdr);
  if (rc != TDB_WAL_OK) return rc;
  be = hdr->magic & 1;
  frame = FRAME_HDR + (size_t)hdr->page_size;
  s[0] = res->cksum1 = hdr->cksum1;
  s[1] = res->cksum2 = hdr->cksum2;
  /* (3) off <= len always holds, so len - off cannot wrap (6) */
  for (; len - off >= frame; off += frame, i++) {
    const uint8_t *f = buf + off;
    uint32_t p = get_be32(f), c = get_be32(f + 4);
    if (get_be32(f + 8) != hdr->salt1 || get_be32(f + 12) != hdr->salt2 || p == 0) break;
    cksum(be, f, 8, s);
    cksum(be, f + FRAME_HDR, hdr->page_size, s);
    if (s[0] != get_be32(f + 16) || s[1] != get_be32(f + 20)) break;
    if (i >= max_frames || !pgno || !commit) return TDB_WAL_ESPACE; /* (5) */
    pgno[i] = p;
    commit[i] = c;
    if (c != 0) { /* (4) */
      res->n_frames = i + 1;
      res->db_size = c;
      res->cksum1 = s[0];
      res->cksum2 = s[1];
    }
  }
  res->n_valid = i;
  return TDB_WAL_OK;
}

int tdb_wal_write_header(uint8_t *out, size_t out_len, tdb_wal_header *hdr) {
  uint32_t s[2] = {0, 0};
  if (!out || !hdr || out_len < WAL_HDR) return TDB_WAL_EARG;
  if ((hdr->magic & ~1u) != WAL_MAGIC || !page_size_ok(hdr->page_size)) return TDB_WAL_EARG;
  hdr->version = WAL_VERSION; /* (7) */
  put_be32(out, hdr->magic);
  put_be32(out + 4, hdr->version);
  put_be32(out + 8, hdr->page_size);
  put_be32(out + 12, hdr->checkpoint_seq);
  put_be32(out + 16, hdr->salt1);
  put_be32(out + 20, hdr->salt2);
  cksum(hdr->magic & 1, out, WAL_HDR - 8, s);
  hdr->cksum1 = s[0];
  hdr->cksum2 = s[1];
  put_be32(out + 24, s[0]);
  put_be32(out + 28, s[1]);
  return TDB_WAL_OK;
}

int tdb_wal_write_frames(uint8_t *out, size_t out_len, const tdb_wal_header *hdr,
                         const uint32_t *pgno, const uint32_t *commit,
                         const uint8_t *pages, size_t n, uint32_t *cksum_io) {
  size_t frame, i;
  if (!hdr || !cksum_io) return TDB_WAL_EARG;
  if ((hdr->magic & ~1u) != WAL_MAGIC || !page_size_ok(hdr->page_size)) return TDB_WAL_EARG;
  if (n == 0) return TDB_WAL_OK;
  if (!out || !pgno || !commit || !pages) return TDB_WAL_EARG;
  frame = FRAME_HDR + (size_t)hdr->page_size;
  if (n > out_len / frame) return TDB_WAL_EARG; /* (6): n * frame <= out_len, no overflow */
  for (i = 0; i < n; i++)
    if (pgno[i] == 0) return TDB_WAL_EARG; /* (7) checked before writing anything */
  for (i = 0; i < n; i++) {
    uint8_t *f = out + i * frame;
    put_be32(f, pgno[i]);
    put_be32(f + 4, commit[i]);
    put_be32(f + 8, hdr->salt1);
    put_be32(f + 12, hdr->salt2);
    memcpy(f + FRAME_HDR, pages + i * (size_t)hdr->page_size, hdr->page_size);
    cksum(hdr->magic & 1, f, 8, cksum_io);
    cksum(hdr->magic & 1, f + FRAME_HDR, hdr->page_size, cksum_io);
    put_be32(f + 16, cksum_io[0]);
    put_be32(f + 20, cksum_io[1]);
  }
  return TDB_WAL_OK;
}

int tdb_wal_index_frames(const uint8_t *buf, size_t len, uint32_t page_size, size_t n,
                         uint32_t first_frame, uint32_t *index, size_t index_len) {
  size_t frame, i, off;
  if (!page_size_ok(page_size) || (n && !buf) || (index_len && !index)) return TDB_WAL_EARG;
  frame = FRAME_HDR + (size_t)page_size;
  if (n > len / frame) return TDB_WAL_EARG; /* (6) */
  for (i = 0, off = 0; i < n; i++, off += frame) {
    uint32_t p = get_be32(buf + off);
    if (p < index_len) index[p] = first_frame + (uint32_t)i;
  }
  return TDB_WAL_OK;
}

/* (8) One pass validates (the checksum chain is serial), a second pass over the committed
** frames writes the index: no per-frame arrays, so a WAL of any size needs no allocation. */
int tdb_wal_follow(const uint8_t *buf, size_t len, const tdb_wal_header *hdr, uint32_t *s,
                   uint32_t first_frame, uint32_t *index, size_t index_len,
                   tdb_wal_result *res) {
  size_t frame, off = 0, i = 0, n;
  uint32_t run[2];
  int be;
  if (!hdr || !s || !res || (len && !buf) || (index_len && !index)) return TDB_WAL_EARG;
  memset(res, 0, sizeof *res);
  if ((hdr->magic & ~1u) != WAL_MAGIC || !page_size_ok(hdr->page_size)) return TDB_WAL_EARG;
  be = hdr->magic & 1;
  frame = FRAME_HDR + (size_t)hdr->page_size;
  run[0] = res->cksum1 = s[0];
  run[1] = res->cksum2 = s[1];
  for (; len - off >= frame; off += frame, i++) { /* (3), off <= len always (6) */
    const uint8_t *f = buf + off;
    uint32_t c = get_be32(f + 4);
    if (get_be32(f + 8) != hdr->salt1 || get_be32(f + 12) != hdr->salt2 || get_be32(f) == 0)
      break;
    cksum(be, f, 8, run);
    cksum(be, f + FRAME_HDR, hdr->page_size, run);
    if (run[0] != get_be32(f + 16) || run[1] != get_be32(f + 20)) break;
    if (c != 0) { /* (4) */
      res->n_frames = i + 1;
      res->db_size = c;
      res->cksum1 = run[0];
      res->cksum2 = run[1];
    }
  }
  res->n_valid = i;
  n = res->n_frames;
  tdb_wal_index_frames(buf, len, hdr->page_size, n, first_frame, index, index_len);
  s[0] = res->cksum1;
  s[1] = res->cksum2;
  return TDB_WAL_OK;
}
