/*
** pagestore.h — the page store behind lazily read databases: a synced layer, a local
** layer and a shared presence/CRC map. Spec and file layout: the header comment of
** pagestore.c. Driven by turso_dbapi/pagestore.py; read by the VFS in vfs.c.
*/
#ifndef TDB_PAGESTORE_H
#define TDB_PAGESTORE_H
#include <stdint.h>
#include <stddef.h>

/* cdef-begin */
typedef struct tdb_store tdb_store; /* opaque; defined in pagestore.c */
#define TDB_STORE_FORMAT 1
#define TDB_MAP_HEADER 4096
#define TDB_IDENTITY_LEN 32

/* tdb_store_open() error codes (also returned through *err). */
#define TDB_OK 0
#define TDB_E_IO 1          /* open/mmap/fallocate failed; errno is in *sys_errno */
#define TDB_E_MISMATCH 2    /* sidecar exists with another format, page size or identity */
#define TDB_E_ARG 3         /* bad page size or path */
#define TDB_E_INUSE 4       /* open in this process with another identity */

/* tdb_store_page_state() bits */
#define TDB_PG_SYNCED 1     /* synced layer holds the page (CRC recorded) */
#define TDB_PG_LOCAL 2      /* local layer holds the page */
#define TDB_PG_PREFETCHED 4 /* stored by readahead and not yet read in this process */
#define TDB_PG_VERIFIED 8   /* CRC checked by a read in this process */

typedef struct tdb_store_counters {
    uint64_t hits;          /* xRead calls served without calling Python */
    uint64_t misses;        /* miss callbacks into Python */
    uint64_t pages_read;    /* pages touched by xRead */
    uint64_t crc_failures;  /* synced pages whose bytes did not match their CRC */
    uint64_t prefetched;    /* pages stored with the prefetched flag */
    uint64_t prefetch_used; /* of those, pages later read */
    uint64_t local_writes;  /* pages written to the local layer */
    uint64_t local_syncs;   /* (22) fdatasync calls of the local layer */
    uint64_t synced_syncs;  /* (22) fdatasync calls of the synced layer */
    uint64_t map_syncs;     /* (22) msync calls of the sidecar's entries */
} tdb_store_counters;

/* tdb_store_sync_parts() flags (pagestore.c rule (22)). */
#define TDB_SYNC_LOCAL 1      /* fdatasync the local layer */
#define TDB_SYNC_SYNCED 2     /* fdatasync the synced layer */
#define TDB_SYNC_MAP 4        /* msync the sidecar */
#define TDB_SYNC_DIRTY_ONLY 8 /* only the parts this process wrote since their last flush */
#define TDB_SYNC_FORGET 16    /* the parts not flushed count as clean from now on */

tdb_store *tdb_store_open(const char *path, uint32_t page_size, uint64_t remote_size,
                          const uint8_t *identity, void *py_handle, int *err, int *sys_errno);
/* (18) The same, read-only: the files must exist; nothing is ever written to them. */
tdb_store *tdb_store_open_readonly(const char *path, uint32_t page_size, uint64_t remote_size,
                                   const uint8_t *identity, void *py_handle, int *err,
                                   int *sys_errno);
int tdb_store_readonly(tdb_store *s);
void tdb_store_release(tdb_store *s);
int tdb_store_refs(tdb_store *s); /* Python's reference + open lazy files */
int tdb_store_put_synced(tdb_store *s, uint32_t pgno, const uint8_t *buf, int overwrite,
                         int prefetched);
/* (19) put_synced of n pages at buf + offsets[i], page numbers pgnos[i], in one call:
** runs of consecutive pages are written with one pwritev. Returns the number of pages
** done (stored or kept) before the first that failed: n when all went in. */
int tdb_store_put_synced_many(tdb_store *s, const uint8_t *buf, const uint32_t *pgnos,
                              const uint32_t *offsets, uint32_t n, int overwrite);
int tdb_store_page_state(tdb_store *s, uint32_t pgno);
int tdb_store_read_page(tdb_store *s, uint32_t pgno, uint8_t *out);
int tdb_store_read_synced(tdb_store *s, uint32_t pgno, uint8_t *out); /* (20) */
uint64_t tdb_store_remote_size(tdb_store *s);
uint64_t tdb_store_logical_size(tdb_store *s);
uint32_t tdb_store_max_pages(tdb_store *s); /* highest page this store can ever hold */
void tdb_store_set_remote_size(tdb_store *s, uint64_t size);
void tdb_store_raise_remote_size(tdb_store *s, uint64_t size); /* (20) remote only, never down */
uint32_t tdb_store_first_absent(tdb_store *s, uint32_t from_pgno, uint32_t to_pgno);
/* first page held in the local layer in [from, to] (to = 0: the whole map), or 0 */
uint32_t tdb_store_first_local(tdb_store *s, uint32_t from_pgno, uint32_t to_pgno);
/* 1 when pgno holds no local change (its local entry, if any, is cleared; rule (17)),
** 0 when it does, -1 on an I/O error */
int tdb_store_forget_unchanged_local(tdb_store *s, uint32_t pgno);
void tdb_store_get_counters(tdb_store *s, tdb_store_counters *out);
int tdb_store_sync(tdb_store *s); /* every part: tdb_store_sync_parts(s, 1|2|4) */
int tdb_store_sync_parts(tdb_store *s, int flags); /* (22) an SQLite code */
int tdb_store_drop_synced(tdb_store *s, uint32_t pgno);
uint32_t tdb_store_drop_local(tdb_store *s); /* (18) whole local layer; count dropped */
/* The VFS's xRead / xWrite / xTruncate of a lazy file, byte-addressed; return SQLite
** codes. Exposed for tests of sub-page I/O (SQLite itself writes whole pages). */
int tdb_store_read(tdb_store *s, uint64_t conn_id, uint8_t *buf, int amt, int64_t off);
/* xRead of a lazy file SQLite has not locked yet (rule (21): the header pre-read). */
int tdb_store_read_unlocked(tdb_store *s, uint64_t conn_id, uint8_t *buf, int amt, int64_t off);
int tdb_store_write(tdb_store *s, uint64_t conn_id, const uint8_t *buf, int amt, int64_t off);
int tdb_store_truncate(tdb_store *s, int64_t size);
/* The shared apply flag (pagestore.c rule (13)): nonzero while a pull switches the
** synced layer. set returns an SQLite code (the msync). */
int tdb_store_applying(tdb_store *s);
int tdb_store_set_applying(tdb_store *s, int on);
/* Rule (14): 1 when, since the last take or the start of this thread's last read
** transaction, a Python callback of this thread failed under an SQLite I/O error. */
int tdb_take_py_failure(void);

int tdb_store_exclusive_holder(tdb_store *s); /* (23) pid, -1 held (or unknown), 0 none */

/* What tdb_py_applying returns (vfs.c rule (13)). 0 is what cffi returns when no Python
** function is attached: the safe answer (wait, never read a half-applied revision). */
#define TDB_APPLY_BUSY 0      /* a live puller or no recovery here: SQLITE_BUSY, retry */
#define TDB_APPLY_RECOVERED 1 /* the apply was finished (or the flag was stale): recheck */
#define TDB_APPLY_PROCEED 2   /* this thread is the one applying: take the lock */
#define TDB_APPLY_FAILED 3    /* recovery failed; the cause is kept on the Python side */
/* cdef-end */

/* The miss callback. cffi defines it (non-static, "Python+C") from the cdef below, which
** the C compiler never sees. Python fetches the absent pages of [pgno, pgno+n) (plus
** readahead), stores them with tdb_store_put_synced, and returns 0; nonzero when it
** could not (the cause stays on the Python side for the error message). */
#if 0
/* cdef-begin */
extern "Python+C" int tdb_py_miss(void *py_handle, uint64_t conn_id, uint32_t pgno,
                                  uint32_t n_pages);
extern "Python+C" int tdb_py_applying(void *py_handle, uint64_t conn_id);
/* cdef-end */
#endif
int tdb_py_miss(void *py_handle, uint64_t conn_id, uint32_t pgno, uint32_t n_pages);
/* The apply flag was seen set while taking a SHARED lock (the lock is released
** again): Python finishes a dead puller's apply. Returns a TDB_APPLY_* code. */
int tdb_py_applying(void *py_handle, uint64_t conn_id);

/* SQLite result codes the store returns to the VFS (no SQLite headers here). */
#define TDB_SQLITE_OK 0
#define TDB_SQLITE_READONLY 8
#define TDB_SQLITE_FULL 13
#define TDB_SQLITE_IOERR_READ (10 | (1 << 8))
#define TDB_SQLITE_IOERR_SHORT_READ (10 | (2 << 8))
#define TDB_SQLITE_IOERR_WRITE (10 | (3 << 8))
#define TDB_SQLITE_IOERR_FSYNC (10 | (4 << 8))
#define TDB_SQLITE_IOERR_TRUNCATE (10 | (6 << 8))
#define TDB_SQLITE_IOERR_NOMEM (10 | (12 << 8))
#define TDB_SQLITE_IOERR_DATA (10 | (32 << 8))

/* C-only interface used by vfs.c (not visible to Python). */
tdb_store *tdb_store_lookup(const char *path);           /* +1 ref, or NULL */
uint32_t tdb_store_page_size(tdb_store *s);
void *tdb_store_py_handle(tdb_store *s);
void tdb_set_py_failure(void);   /* (14) */
void tdb_clear_py_failure(void); /* (14) */
int tdb_store_backfill_synced(tdb_store *s, uint32_t pgno, const uint8_t *buf); /* (20) */
const char *tdb_store_path(tdb_store *s);

#endif
