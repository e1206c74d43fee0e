/*
** wal_index.c — commit pulled pages into a WAL replica as SQLite's writer would, and
** classify a checkpoint's writes (pulled vs local). Python (storage/wal_writer.py) plans
** the frames; this runs them while the caller's connection holds the WAL write lock.
**
** THE WAL-INDEX (https://www.sqlite.org/walformat.html; native byte order)
**   Region 0 starts with two copies of the 48-byte header (iVersion, unused, iChange,
**   isInit, bigEndCksum, szPage, mxFrame, nPage, aFrameCksum[2], aSalt[2], aCksum[2]) and
**   the checkpoint info (nBackfill at 96, aReadMark[5], aLock[8], nBackfillAttempted at
**   128): 136 bytes. Each 32 KiB region then holds a hash block: aPgno (u32 per frame;
**   4062 frames in region 0, which starts after the 136 bytes, 4096 in the others) and
**   aHash, 8192 u16 slots at byte 16384 of the region; a slot holds a frame's index in
**   its block (1-based), found by linear probing from (pgno * 383) & 8191.
**
** RULES (tagged in the code)
**   (1) Jobs run only from vfs.c's pragma hook, on the connection that holds the WAL
**       write lock (its BEGIN IMMEDIATE): no other writer, restart or RESTART/TRUNCATE
**       checkpoint can move the header meanwhile. A job runs once (its token is consumed).
**   (2) APPEND refuses (EMOVED) unless mxFrame and the salts are what Python planned
**       on: the plan (which pages are local, which frame is synced) used that state.
**   (3) Frames go after mxFrame, continuing aFrameCksum with the header's salts; an empty
**       WAL (mxFrame 0) gets a fresh header first: salt-1 one past the index's, a new
**       salt-2, so no leftover frame of an older generation can ever validate after ours.
**       Only the last frame is a commit frame (db size = the new size); frames are
**       written CHUNK at a time (pages from memory or read from a file: src_off), the
**       commit frame last. The -wal file
**       is fsynced before the wal-index changes: a crash leaves the old state (frames
**       past mxFrame are ignored and overwritten) or, after SQLite's recovery, the new.
**   (4) Hash entries: entries past mxFrame in its block (a writer that died or rolled
**       back) are cleared first, as SQLite's walCleanupHash; a block's first frame
**       zeroes the block; probing never loops more than the block has entries.
**   (5) The header: iChange + 1, mxFrame, nPage, aFrameCksum, (fresh WAL) salts and
**       byte order, isInit, iVersion, aCksum over its first 40 bytes; copy 2 is written,
**       then a memory barrier (xShmBarrier), then copy 1 — readers that see copy 1 ==
**       copy 2 therefore see the whole new header; hash entries are in place before.
**   (6) Readers keep their snapshot: they only consider frames <= their own mxFrame,
**       and nothing here touches the database file or the read marks.
**   (7) READ reports the state from copy 1 (checked against copy 2).
**   (8) Checkpoint classification: "<P>-tdbwalsync" lists the frames Python appended for
**       pulls (frame, page, CRC32C of the page), for one WAL generation (its salts). At
**       SQLITE_FCNTL_CKPT_START the VFS loads it when its salts are the live header's, and
**       reads nBackfillAttempted (= the checkpoint's mxSafeFrame, stored before it writes).
**       The page a checkpoint writes for pgno is its last frame <= mxSafeFrame; that write
**       is synced when that frame is listed with the same page and the CRC of the bytes
**       written: a local frame is never taken for a synced one (wrong frame or CRC).
**   (9) A local frame written by a checkpoint may shadow a synced frame of the same page
**       (a pull, then a local write or the pull's replay of that page): SQLite backfills
**       only the last frame, so the synced version would be lost for the synced layer
**       (a later pull reverts local pages to it). The classification then also hands back
**       the page's last listed synced frame before it (read from the -wal, its CRC
**       checked): the VFS stores it in the synced layer, which no reader sees (the local
**       layer holds the page), before the local write.
*/
#define _GNU_SOURCE
#include "wal_index.h"
#include "checksum.h"
#include "wal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SQLITE_OK 0
#define SQLITE_IOERR 10

#define REGION 32768
#define HDR_BYTES 136
#define NPAGE 4096
#define NPAGE_ONE 4062
#define NSLOT 8192
#define HASH_MUL 383
#define OFF_BACKFILL 96
#define OFF_BACKFILL_ATTEMPTED 128
#define WAL_HDR 32u
#define FRAME_HDR 24u

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define HOST_BE 1
#else
#define HOST_BE 0
#endif

typedef struct wi_hdr {
  uint32_t iVersion;
  uint32_t unused;
  uint32_t iChange;
  uint8_t isInit;
  uint8_t bigEndCksum;
  uint16_t szPage;
  uint32_t mxFrame;
  uint32_t nPage;
  uint32_t aFrameCksum[2];
  uint8_t aSalt[8]; /* the WAL header's bytes 16..23 as they are */
  uint32_t aCksum[2];
} wi_hdr;

typedef char wi_hdr_is_48_bytes[sizeof(wi_hdr) == 48 ? 1 : -1];

static uint32_t get_be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* ------------------------------------------------------------------ job registry (1) */

typedef struct reg {
  struct reg *next;
  uint64_t token;
  tdb_wi_job *job;
} reg;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static reg *g_jobs;
static uint64_t g_next = 0x5eed;

uint64_t tdb_wi_submit(tdb_wi_job *job) {
  reg *r = malloc(sizeof *r);
  if (!r) return 0;
  pthread_mutex_lock(&g_mu);
  /* Tokens are not guessable by accident: a user's stray pragma finds no job. */
  g_next = g_next * 6364136223846793005ull + 1442695040888963407ull;
  r->token = (g_next ^ (uint64_t)(uintptr_t)job) | 1;
  r->job = job;
  r->next = g_jobs;
  g_jobs = r;
  uint64_t t = r->token;
  pthread_mutex_unlock(&g_mu);
  return t;
}

static tdb_wi_job *take(uint64_t token) {
  tdb_wi_job *job = NULL;
  pthread_mutex_lock(&g_mu);
  for (reg **pp = &g_jobs; *pp; pp = &(*pp)->next) {
    if ((*pp)->token == token) {
      reg *r = *pp;
      *pp = r->next;
      job = r->job;
      free(r);
      break;
    }
  }
  pthread_mutex_unlock(&g_mu);
  return job;
}

int tdb_wi_withdraw(uint64_t token) { return take(token) != NULL; }

/* ------------------------------------------------------------------ wal-index access */

static volatile uint8_t *region(const tdb_wi_shm *shm, int i, int extend) {
  void volatile *p = NULL;
  if (shm->map(shm->file, i, REGION, extend, &p) != SQLITE_OK) return NULL;
  return (volatile uint8_t *)p;
}

static int read_hdr(volatile uint8_t *r0, wi_hdr *out) {
  wi_hdr h2;
  memcpy(out, (const void *)r0, sizeof *out);
  memcpy(&h2, (const void *)(r0 + sizeof(wi_hdr)), sizeof h2);
  return memcmp(out, &h2, sizeof h2) == 0 && out->isInit; /* (7) */
}

static void fill_state(const wi_hdr *h, volatile uint8_t *r0, tdb_wi_state *st) {
  st->mx_frame = h->mxFrame;
  st->n_page = h->nPage;
  st->n_backfill = __atomic_load_n((uint32_t *)(r0 + OFF_BACKFILL), __ATOMIC_ACQUIRE);
  st->salt1 = get_be32(h->aSalt);
  st->salt2 = get_be32(h->aSalt + 4);
  st->page_size = (uint32_t)(h->szPage & 0xfe00) | ((uint32_t)(h->szPage & 1) << 16);
  st->big_end = h->bigEndCksum;
  st->i_change = h->iChange;
}

static uint32_t block_of(uint32_t frame) { return (frame + NPAGE - NPAGE_ONE - 1) / NPAGE; }

typedef struct loc {
  volatile uint32_t *aPgno; /* aPgno[idx-1] is the page of frame iZero+idx */
  volatile uint16_t *aHash;
  uint32_t iZero;
} loc;

static int locate(const tdb_wi_shm *shm, uint32_t block, int extend, loc *l) {
  volatile uint8_t *r = region(shm, (int)block, extend);
  if (!r) return 0;
  l->aHash = (volatile uint16_t *)(r + NPAGE * 4);
  if (block == 0) {
    l->aPgno = (volatile uint32_t *)(r + HDR_BYTES);
    l->iZero = 0;
  } else {
    l->aPgno = (volatile uint32_t *)r;
    l->iZero = NPAGE_ONE + (block - 1) * NPAGE;
  }
  return 1;
}

static uint32_t hash_of(uint32_t pgno) { return (pgno * HASH_MUL) & (NSLOT - 1); }

/* (4) walCleanupHash: drop entries for frames past mxFrame in mxFrame's block. */
static int cleanup(const tdb_wi_shm *shm, uint32_t mx) {
  loc l;
  if (mx == 0) return 1;
  if (!locate(shm, block_of(mx), 0, &l)) return 0;
  uint32_t limit = mx - l.iZero;
  for (int i = 0; i < NSLOT; i++)
    if (l.aHash[i] > limit) l.aHash[i] = 0;
  uint32_t room = (uint32_t)((volatile uint8_t *)l.aHash - (volatile uint8_t *)&l.aPgno[limit]);
  memset((void *)&l.aPgno[limit], 0, room);
  return 1;
}

static int hash_append(const tdb_wi_shm *shm, uint32_t frame, uint32_t pgno) {
  loc l;
  if (!locate(shm, block_of(frame), 1, &l)) return TDB_WI_ESHM;
  uint32_t idx = frame - l.iZero;
  if (idx == 1) { /* (4) a block's first frame: the whole block starts empty */
    size_t n = (size_t)((volatile uint8_t *)&l.aHash[NSLOT] - (volatile uint8_t *)l.aPgno);
    memset((void *)l.aPgno, 0, n);
  }
  uint32_t key = hash_of(pgno), collide = idx;
  while (l.aHash[key]) {
    if (collide-- == 0) return TDB_WI_ECORRUPT;
    key = (key + 1) & (NSLOT - 1);
  }
  l.aPgno[idx - 1] = pgno;
  __atomic_store_n(&l.aHash[key], (uint16_t)idx, __ATOMIC_RELEASE);
  return TDB_WI_OK;
}

/* The last frame <= last holding pgno (0: none), as SQLite's walFindFrame. */
static uint32_t find_frame(const tdb_wi_shm *shm, uint32_t pgno, uint32_t last) {
  if (last == 0) return 0;
  for (int64_t b = block_of(last); b >= 0; b--) {
    loc l;
    if (!locate(shm, (uint32_t)b, 0, &l)) return 0;
    uint32_t best = 0, collide = NSLOT;
    for (uint32_t key = hash_of(pgno), h; (h = l.aHash[key]) != 0; key = (key + 1) & (NSLOT - 1)) {
      uint32_t f = h + l.iZero;
      if (f <= last && f > best && l.aPgno[h - 1] == pgno) best = f;
      if (collide-- == 0) return 0;
    }
    if (best) return best;
  }
  return 0;
}

static void write_hdr(const tdb_wi_shm *shm, volatile uint8_t *r0, wi_hdr *h) {
  uint32_t s[2] = {0, 0};
  h->isInit = 1;
  h->iVersion = 3007000;
  tdb_wal_checksum(HOST_BE, (const uint8_t *)h, 40, s); /* native words */
  h->aCksum[0] = s[0];
  h->aCksum[1] = s[1];
  memcpy((void *)(r0 + sizeof(wi_hdr)), h, sizeof *h); /* (5) copy 2 */
  shm->barrier(shm->file);
  memcpy((void *)r0, h, sizeof *h); /* then copy 1 */
  shm->barrier(shm->file);
}

/* ------------------------------------------------------------------ the append */

static int pwrite_all(int fd, const uint8_t *b, size_t n, off_t off) {
  while (n) {
    ssize_t w = pwrite(fd, b, n, off);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    b += w, n -= (size_t)w, off += w;
  }
  return 0;
}

#define CHUNK 64u /* frames per write of an append */

static int append(tdb_wi_job *job, const tdb_wi_shm *shm) {
  volatile uint8_t *r0 = region(shm, 0, 0);
  wi_hdr h;
  if (!r0) return TDB_WI_ESHM;
  if (!read_hdr(r0, &h)) return TDB_WI_ECORRUPT;
  fill_state(&h, r0, &job->state);
  tdb_wi_state *st = &job->state;
  if (st->mx_frame != job->expect_mx || st->salt1 != job->expect_salt1 ||
      st->salt2 != job->expect_salt2)
    return TDB_WI_EMOVED; /* (2) */
  uint32_t ps = job->page_size;
  if (st->page_size && st->page_size != ps) return TDB_WI_EARG;
  if (job->n == 0 || !job->pgno || (!job->pages && !job->src_off) || job->db_size == 0 || ps < 512 || ps > 65536)
    return TDB_WI_EARG;
  for (uint32_t i = 0; i < job->n; i++)
    if (job->pgno[i] == 0 || job->pgno[i] > job->db_size) return TDB_WI_EARG;

  tdb_wal_header wh;
  memset(&wh, 0, sizeof wh);
  uint8_t whbuf[WAL_HDR];
  uint32_t ck[2];
  int fresh = st->mx_frame == 0;
  int fd = open(job->wal_path, O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    job->sys_errno = errno;
    return TDB_WI_EIO;
  }
  if (fresh) { /* (3) */
    uint8_t old[WAL_HDR];
    ssize_t got = pread(fd, old, WAL_HDR, 0);
    wh.magic = 0x377f0682u | (uint32_t)HOST_BE;
    wh.page_size = ps;
    wh.checkpoint_seq = got == (ssize_t)WAL_HDR ? get_be32(old + 12) + 1 : 0;
    wh.salt1 = st->salt1 + 1;
    wh.salt2 = job->new_salt2;
    tdb_wal_write_header(whbuf, sizeof whbuf, &wh);
    ck[0] = wh.cksum1, ck[1] = wh.cksum2;
  } else {
    wh.magic = 0x377f0682u | (st->big_end ? 1u : 0u);
    wh.page_size = ps;
    wh.salt1 = st->salt1;
    wh.salt2 = st->salt2;
    ck[0] = h.aFrameCksum[0], ck[1] = h.aFrameCksum[1];
  }
  /* (3) the frames go out in chunks of CHUNK (a pull's pages are read from its stage file:
  ** never all in memory); the running checksum carries over, the commit frame is the last
  ** one written, and nothing is visible before the fsync and the header below. */
  size_t fsz = FRAME_HDR + (size_t)ps, mem = 0;
  uint32_t chunk = job->n < CHUNK ? job->n : CHUNK;
  uint8_t *buf = malloc(fsz * chunk), *src = malloc((size_t)ps * chunk);
  uint32_t *commit = calloc(chunk, sizeof *commit);
  int rc = TDB_WI_OK;
  if (!buf || !src || !commit) {
    rc = TDB_WI_EIO;
    job->sys_errno = ENOMEM;
    goto out;
  }
  if (fresh && pwrite_all(fd, whbuf, WAL_HDR, 0) != 0) {
    rc = TDB_WI_EIO;
    job->sys_errno = errno;
    goto out;
  }
  for (uint32_t done = 0; done < job->n; done += chunk) {
    uint32_t k = job->n - done < chunk ? job->n - done : chunk;
    for (uint32_t i = 0; i < k; i++) {
      uint8_t *dst = src + (size_t)i * ps;
      int64_t at = job->src_off ? job->src_off[done + i] : -1;
      if (at < 0) {
        if (!job->pages) {
          rc = TDB_WI_EARG;
          goto out;
        }
        memcpy(dst, job->pages + mem * ps, ps);
        mem++;
      } else if (pread(job->src_fd, dst, ps, (off_t)at) != (ssize_t)ps) {
        rc = TDB_WI_EIO;
        job->sys_errno = errno ? errno : EIO;
        goto out;
      }
      commit[i] = done + i == job->n - 1 ? job->db_size : 0;
    }
    if (tdb_wal_write_frames(buf, fsz * k, &wh, job->pgno + done, commit, src, k, ck) != TDB_WAL_OK) {
      rc = TDB_WI_EARG;
      goto out;
    }
    if (pwrite_all(fd, buf, fsz * k, (off_t)(WAL_HDR + ((uint64_t)st->mx_frame + done) * fsz)) != 0) {
      rc = TDB_WI_EIO;
      job->sys_errno = errno;
      goto out;
    }
  }
  if (fdatasync(fd) != 0) { /* (3) durable before any reader can see it */
    rc = TDB_WI_EIO;
    job->sys_errno = errno;
    goto out;
  }
  if (!cleanup(shm, st->mx_frame)) { /* (4) */
    rc = TDB_WI_ESHM;
    goto out;
  }
  for (uint32_t i = 0; i < job->n && rc == TDB_WI_OK; i++)
    rc = hash_append(shm, st->mx_frame + 1 + i, job->pgno[i]);
  if (rc != TDB_WI_OK) goto out; /* the header never moved: readers ignore those entries */
  job->first_frame = st->mx_frame + 1;
  h.iChange++; /* (5) */
  h.mxFrame = st->mx_frame + job->n;
  h.nPage = job->db_size;
  h.aFrameCksum[0] = ck[0], h.aFrameCksum[1] = ck[1];
  if (fresh) {
    put_be32(h.aSalt, wh.salt1);
    put_be32(h.aSalt + 4, wh.salt2);
    h.bigEndCksum = (uint8_t)(wh.magic & 1);
  }
  h.szPage = (uint16_t)((ps & 0xff00) | (ps >> 16));
  write_hdr(shm, r0, &h);
  fill_state(&h, r0, &job->state);
out:
  free(buf);
  free(src);
  free(commit);
  close(fd);
  return rc;
}

int tdb_wi_run(uint64_t token, const tdb_wi_shm *shm) {
  tdb_wi_job *job = take(token); /* (1) once */
  if (!job) return SQLITE_IOERR;
  if (job->op == TDB_WI_READ) {
    volatile uint8_t *r0 = region(shm, 0, 0);
    wi_hdr h;
    job->rc = !r0 ? TDB_WI_ESHM : !read_hdr(r0, &h) ? TDB_WI_ECORRUPT : TDB_WI_OK;
    if (job->rc == TDB_WI_OK) fill_state(&h, r0, &job->state);
  } else if (job->op == TDB_WI_APPEND) {
    job->rc = append(job, shm);
  } else {
    job->rc = TDB_WI_EARG;
  }
  return job->rc == TDB_WI_OK ? SQLITE_OK : SQLITE_IOERR;
}

/* ------------------------------------------------------------------ checkpoints (8) */

static const uint8_t SYNC_MAGIC[8] = {'T', 'D', 'B', 'W', 'S', 'Y', 'N', 1};
#define SYNC_HDR 24

typedef struct entry3 {
  uint32_t frame, pgno, crc;
} entry3;

struct tdb_wi_ckpt {
  uint32_t safe;      /* nBackfillAttempted: the checkpoint's mxSafeFrame */
  uint32_t page_size;
  uint32_t n;
  entry3 *e;          /* sorted by frame */
  entry3 *by_page;    /* the same, sorted by (page, frame) */
  int wal_fd;         /* "<P>-wal", for the synced version of a shadowed page */
  uint8_t *buf;       /* one page */
};

static int by_page_cmp(const void *a, const void *b) {
  const entry3 *x = a, *y = b;
  if (x->pgno != y->pgno) return x->pgno < y->pgno ? -1 : 1;
  return x->frame < y->frame ? -1 : x->frame > y->frame;
}

static char *suffixed(const char *path, const char *suffix) {
  size_t n = strlen(path), m = strlen(suffix);
  char *z = malloc(n + m + 1);
  if (z) {
    memcpy(z, path, n);
    memcpy(z + n, suffix, m + 1);
  }
  return z;
}

void tdb_wi_ckpt_end(tdb_wi_ckpt *c) {
  if (!c) return;
  if (c->wal_fd >= 0) close(c->wal_fd);
  free(c->e);
  free(c->by_page);
  free(c->buf);
  free(c);
}

tdb_wi_ckpt *tdb_wi_ckpt_begin(const tdb_wi_shm *shm, const char *db_path, uint32_t page_size) {
  volatile uint8_t *r0 = region(shm, 0, 0);
  wi_hdr h;
  if (!r0 || !read_hdr(r0, &h)) return NULL;
  char *path = suffixed(db_path, "-tdbwalsync");
  int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
  free(path);
  if (fd < 0) return NULL;
  uint8_t head[SYNC_HDR];
  uint32_t salt[2], count = 0;
  int ok = pread(fd, head, SYNC_HDR, 0) == SYNC_HDR && memcmp(head, SYNC_MAGIC, 8) == 0;
  if (ok) {
    memcpy(salt, head + 8, 8); /* native words (Python's "=I"): the WAL header's values */
    memcpy(&count, head + 16, 4);
    /* only this WAL generation's list counts */
    ok = salt[0] == get_be32(h.aSalt) && salt[1] == get_be32(h.aSalt + 4) && count && count < (1u << 26);
  }
  tdb_wi_ckpt *c = ok ? calloc(1, sizeof *c) : NULL;
  if (c) {
    size_t bytes = (size_t)count * sizeof(entry3);
    c->wal_fd = -1;
    c->page_size = page_size;
    c->safe = __atomic_load_n((uint32_t *)(r0 + OFF_BACKFILL_ATTEMPTED), __ATOMIC_ACQUIRE);
    c->e = malloc(bytes);
    c->by_page = malloc(bytes);
    c->buf = malloc(page_size);
    char *wal = suffixed(db_path, "-wal");
    c->wal_fd = wal ? open(wal, O_RDONLY | O_CLOEXEC) : -1;
    free(wal);
    if (c->e && c->by_page && c->buf && pread(fd, c->e, bytes, SYNC_HDR) == (ssize_t)bytes) {
      c->n = count;
      memcpy(c->by_page, c->e, bytes);
      qsort(c->by_page, count, sizeof(entry3), by_page_cmp);
    }
  }
  close(fd);
  return c;
}

static uint32_t tag_of(const uint8_t *page, uint32_t ps) {
  uint32_t crc = tdb_crc32c(0, page, ps);
  return crc ? crc : 1; /* the sidecar's tag: a CRC of 0 is stored as 1 */
}

int tdb_wi_ckpt_classify(tdb_wi_ckpt *c, const tdb_wi_shm *shm, uint32_t pgno, const uint8_t *page,
                         const uint8_t **synced) {
  *synced = NULL;
  if (!c || !c->n) return TDB_WI_CKPT_LOCAL;
  uint32_t f = find_frame(shm, pgno, c->safe);
  if (!f) return TDB_WI_CKPT_LOCAL;
  uint32_t lo = 0, hi = c->n;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (c->e[mid].frame < f) lo = mid + 1;
    else hi = mid;
  }
  if (lo < c->n && c->e[lo].frame == f && c->e[lo].pgno == pgno && c->e[lo].crc == tag_of(page, c->page_size))
    return TDB_WI_CKPT_SYNCED;
  /* (9) a local frame: the last synced frame of the page before it must not be lost */
  lo = 0, hi = c->n;
  while (lo < hi) { /* first entry >= (pgno, f) */
    uint32_t mid = lo + (hi - lo) / 2;
    const entry3 *m = &c->by_page[mid];
    if (m->pgno < pgno || (m->pgno == pgno && m->frame < f)) lo = mid + 1;
    else hi = mid;
  }
  if (lo == 0 || c->by_page[lo - 1].pgno != pgno || c->wal_fd < 0) return TDB_WI_CKPT_LOCAL;
  const entry3 *s = &c->by_page[lo - 1];
  off_t off = (off_t)WAL_HDR + (off_t)(s->frame - 1) * (FRAME_HDR + c->page_size) + FRAME_HDR;
  if (pread(c->wal_fd, c->buf, c->page_size, off) != (ssize_t)c->page_size ||
      tag_of(c->buf, c->page_size) != s->crc)
    return TDB_WI_CKPT_LOCAL; /* not the listed bytes (overwritten): nothing to keep */
  *synced = c->buf;
  return TDB_WI_CKPT_SHADOWED;
}
