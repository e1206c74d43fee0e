/*
** wal.h — SQLite write-ahead-log (WAL) checksum, parser and writer.
**
** FORMAT (all header fields are big-endian u32)
**   WAL header, 32 bytes: magic 0x377f0682|0x377f0683, version 3007000, page size,
**   checkpoint sequence, salt-1, salt-2, checksum-1, checksum-2 (over bytes 0..23).
**   Frame = 24-byte frame header + one page: page number, db size in pages after the
**   commit (nonzero only on a commit frame), salt-1, salt-2, checksum-1, checksum-2.
**   A frame's checksum continues the previous frame's (the header's for frame 1) over
**   the frame header's first 8 bytes, then the page.
**
** RULES (tagged in wal.c)
**   (1) Checksum: over u32 pairs (x0, x1): s0 += x0 + s1; s1 += x1 + s0 (mod 2^32).
**       Words are read big-endian when the magic's low bit is 1 (0x377f0683), else
**       little-endian — whatever the host. The length must be a multiple of 8.
**   (2) Header checks, in SQLite's recovery order: length >= 32 (TRUNC), magic (MAGIC),
**       page size a power of two in 512..65536 (PAGESIZE), header checksum (CKSUM),
**       version 3007000 (VERSION). SQLite ignores a WAL failing the first four and
**       refuses to open one failing the fifth; here each is an error code.
**   (3) Frames are walked from offset 32 in steps of 24 + page size while a whole frame
**       fits in the buffer. A frame is valid when its salts equal the header's, its page
**       number is nonzero and its cumulative checksum matches. The walk stops at the
**       first invalid frame (a torn tail, a frame of an older WAL generation) — that is
**       not an error, as in SQLite's recovery.
**   (4) Only frames up to the last valid commit frame count: n_frames (SQLite's
**       mxFrame), db_size (that frame's commit size) and cksum1/2 (the running checksum
**       after it, the header's when there is no commit: what a writer appending to this
**       WAL continues from). n_valid also counts a valid uncommitted tail.
**   (5) tdb_wal_scan writes pgno[i] and commit[i] for every valid frame i < n_valid, and
**       nothing past max_frames: if more valid frames exist it returns ESPACE. Size the
**       arrays with tdb_wal_max_frames(), which bounds the frame count of any buffer.
**   (6) Never reads outside [buf, buf+len) or writes outside the caller's arrays, on
**       any input; sizes are checked without overflow. No allocation, no globals.
**   (7) Writer: tdb_wal_write_header fills version 3007000 and the checksum (into out
**       and hdr); tdb_wal_write_frames writes n frames of page images laid end to end in
**       `pages`, continuing the running checksum in cksum[2] (in/out), with the
**       header's salts. Page number 0, a bad magic or page size, or an out buffer too
**       small give ARG and write nothing.
**   (8) Client path (tdb_wal_follow): frames laid end to end in `buf` (which starts
**       at a frame boundary of the WAL described by hdr: its salts, byte order and page
**       size) are checked as in (3), continuing the running checksum s[2] (in: after the
**       last frame already trusted; out: after the last valid commit frame of buf, or
**       unchanged when there is none). Only frames up to the last valid commit count
**       (4); for each, in order, index[pgno] = first_frame + i (the WAL frame number,
**       1-based, so 0 means "not in the WAL"). Page numbers >= index_len are not
**       recorded (pages past the size the caller tracks). res reports the frame counts
**       of buf alone and the last commit's db size. Never reads or writes out of bounds.
**       tdb_wal_index_frames is the indexing pass alone, for the first n frames of buf
**       (already validated), when the caller had to grow its index.
*/
#ifndef TDB_WAL_H
#define TDB_WAL_H
#include <stdint.h>
#include <stddef.h>

/* cdef-begin */
#define TDB_WAL_OK 0
#define TDB_WAL_ETRUNC 1
#define TDB_WAL_EMAGIC 2
#define TDB_WAL_EPAGESIZE 3
#define TDB_WAL_ECKSUM 4
#define TDB_WAL_EVERSION 5
#define TDB_WAL_ESPACE 6
#define TDB_WAL_EARG 7

typedef struct tdb_wal_header {
  uint32_t magic;
  uint32_t version;
  uint32_t page_size;
  uint32_t checkpoint_seq;
  uint32_t salt1;
  uint32_t salt2;
  uint32_t cksum1;
  uint32_t cksum2;
} tdb_wal_header;

typedef struct tdb_wal_result {
  size_t n_frames;   /* frames up to and including the last commit frame */
  size_t n_valid;    /* valid frames, including an uncommitted tail */
  uint32_t db_size;  /* commit size of the last commit frame, 0 if none */
  uint32_t cksum1;   /* running checksum after the last commit frame */
  uint32_t cksum2;
} tdb_wal_result;

int tdb_wal_checksum(int big_endian, const uint8_t *buf, size_t len, uint32_t *s);
int tdb_wal_read_header(const uint8_t *buf, size_t len, tdb_wal_header *hdr);
size_t tdb_wal_max_frames(uint32_t page_size, size_t len);
int tdb_wal_scan(const uint8_t *buf, size_t len, tdb_wal_header *hdr, uint32_t *pgno,
                 uint32_t *commit, size_t max_frames, tdb_wal_result *res);
int tdb_wal_write_header(uint8_t *out, size_t out_len, tdb_wal_header *hdr);
int tdb_wal_write_frames(uint8_t *out, size_t out_len, const tdb_wal_header *hdr,
                         const uint32_t *pgno, const uint32_t *commit,
                         const uint8_t *pages, size_t n, uint32_t *cksum);
int tdb_wal_follow(const uint8_t *buf, size_t len, const tdb_wal_header *hdr, uint32_t *s,
                   uint32_t first_frame, uint32_t *index, size_t index_len,
                   tdb_wal_result *res);
int tdb_wal_index_frames(const uint8_t *buf, size_t len, uint32_t page_size, size_t n,
                         uint32_t first_frame, uint32_t *index, size_t index_len);
/* cdef-end */

#endif
