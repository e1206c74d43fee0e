/*
** vfs.c — the "turso_dbapi" SQLite VFS: a shim over the default VFS that serves
** lazily backed main databases from the page store (pagestore.c).
**
** LOADING
**   Route A: turso_dbapi/vfs.py finds sqlite3_vfs_find / sqlite3_vfs_register of the
**   library the stdlib _sqlite3 module uses (dlsym on its module handle) and calls
**   tdb_vfs_register(find, register).
**   Route B: sqlite3_load_extension() of this very .so; SQLite derives the entry point
**   from the file name (_tdb_native.abi3.so -> sqlite3_tdbnative_init), which calls
**   the same registration through the sqlite3_api_routines table and returns
**   SQLITE_OK_LOAD_PERMANENTLY so the library stays loaded.
**
** USING
**   sqlite3.connect("file:/abs/P?vfs=turso_dbapi&tdbconn=N", uri=True). The main
**   database P is LAZY when turso_dbapi/pagestore.py has opened a store for exactly
**   that path (tdb_store_open); every other file (journals, WAL, temp files, main
**   databases without a store) passes straight through to the default VFS.
**   tdbconn=N (optional) is handed to the miss callback so Python can charge the
**   fetch to the connection that missed.
**
** RULES (numbers match DESIGN.md 2.3 and pagestore.c)
**   (1) xFileSize of a lazy file is the store's logical size, never the file's.
**   (2)(3)(5)(6)(7) xRead/xWrite/xTruncate are the store's (pagestore.c).
**   (4) xFetch of a lazy file returns *pp = 0 (no mmap: it would bypass presence and
**       CRC checks) and SQLITE_FCNTL_MMAP_SIZE reports 0; the shm methods, locks and
**       everything else are the default VFS's, on the real file P that sits right
**       after our struct, so journal_mode=WAL and multi-process locking work as usual.
**   (10) Registration is idempotent and never rewrites a registered sqlite3_vfs: the
**       struct is filled once, before its first registration.
**   (11) SQLITE_FCNTL_SIZE_HINT is swallowed for lazy files (P holds the sparse synced
**       layer; growing it is pointless), and SQLITE_IOCAP_BATCH_ATOMIC is masked (the
**       default VFS's atomic-write ioctl would cover P, not where our writes go).
**   (13) xLock of a lazy file to SHARED (the start of every read transaction) checks
**       the store's shared apply flag (pagestore.c rule (13)) after taking the lock:
**       one load when clear. When set, no live puller can hold EXCLUSIVE (we hold
**       SHARED), so a puller died mid-apply: release the lock and call Python once
**       (tdb_py_applying), which finishes the apply (or reports a live puller still
**       holding the pull lock: SQLITE_BUSY, so the busy handler retries); then take
**       the lock again and recheck. A connection therefore never starts a read
**       transaction on a half-switched synced layer, whatever Python layer it uses.
**   (14) The same xLock clears this thread's "Python failed" mark (pagestore.c rule
**       (14)): an I/O error of an earlier transaction never lends its cause to a
**       later one. A failed recovery sets it (the cause is kept on the Python side).
**       In WAL mode the SHARED lock is held for the connection's life and a read
**       transaction starts with a shared xShmLock (a read mark): that clears it too.
**   (16) PRAGMA journal_mode=WAL on a main database opened with the URI parameter
**       tdbnowal=1 (synced Turso replicas, until WAL replicas are proven) becomes a query:
**       SQLite hands every PRAGMA to the file (SQLITE_FCNTL_PRAGMA) before running it, and
**       the mode argument is made one that names no mode, which SQLite answers with the
**       mode in effect, without an error (as it does where WAL cannot be set, e.g.
**       ":memory:"). Holds whatever authorizer the user installs, and in exclusive
**       locking mode, where SQLite would otherwise switch to WAL without shared memory.
**   (17) "PRAGMA tdb_wal_job=<token>" on a lazy main database runs the wal_index.c job of
**       that token (a pull's frames and wal-index update, WAL replicas) with this file's
**       shm methods, at prepare time, on the connection that holds the WAL write lock.
**       The hook answers SQLITE_NOTFOUND (the outcome is in the job): SQLite then treats it
**       as an unknown pragma, a statement without result columns.
**   (18) Between SQLITE_FCNTL_CKPT_START and _DONE (SQLite's checkpoint brackets its
**       writes to the database file with them) a whole-page write whose WAL frame is a
**       pulled one (wal_index.c rule (8)) goes to the synced layer; every other write is
**       local (and keeps the synced version of the page it shadows, rule (9) there). Without those brackets (SQLite < 3.32) every write is local, pulled pages
**       included, whose synced layer copy is then older: a pull fetches the synced
**       version of every local page again (sync/wal_plan.py CKPT_SIGNALS).
**   (19) WAL replicas: a read transaction starts with a shared xShmLock on a read mark; when
**       the apply flag is set it is refused (SQLITE_BUSY: SQLite's WAL retry loop tries
**       again) unless Python says this thread applies or a dead puller's apply was
**       finished (the same callback as (13)). Read transactions already open keep their
**       snapshot: the apply only appends to the WAL. A WAL pull is one commit and never
**       sets the flag (sync/wal_apply.py): this only holds readers out while an older
**       version's interrupted two-commit apply is redone.
**   (20) A write transaction on a lazy file gets a fresh id (txn.c): xLock to RESERVED
**       in rollback mode, the exclusive WAL_WRITE shm lock in WAL mode; the capture's
**       sqlite_tdb_txn table reads it through tdb_vfs_txn_mark.
**   (21) Until a lazy file is first locked, xRead is tdb_store_read_unlocked: SQLite's
**       header pre-read at open must not fail on a page a killed writer left newer than
**       its CRC; the hot-journal rollback under the lock repairs it (pagestore.c (21)).
**   (22) xSync of a lazy file flushes only what this process wrote since the last flush
**       (pagestore.c rule (22)): in rollback mode the local layer and the sidecar. P is
**       not synced through the default VFS: a lazy file never writes it that way (xWrite
**       and xTruncate are the store's), and the store's own descriptor of P is flushed
**       when the synced layer was written. xSync of every other file passes through and
**       is counted (tdb_vfs_passthrough_syncs): tests compare a replica's commit with a
**       plain file's.
**   (23) A lazy file keeps its WAL and shared memory across closes (SQLite's persistent-WAL
**       mode, SQLITE_FCNTL_PERSIST_WAL answers 1), so a read-only open of a WAL replica
**       needs to create nothing: SQLite opens a WAL database read-only when its -wal and
**       -shm exist (the read-only connection maps -shm read-only: storage/vfs.py adds
**       readonly_shm=1), also in a read-only directory. SQLite asks only in its WAL close,
**       after a checkpoint of every frame, holding EXCLUSIVE (no other connection is open):
**       the WAL is then truncated to zero bytes, as journal_size_limit=0 would, so the next
**       opener recovers an empty WAL, never frames already checkpointed.
**   (12) A main database that has a page-store sidecar ("P-tdbmap") but no store open
**       in this process is refused with SQLITE_CANTOPEN: its file P is the sparse synced
**       layer, and serving it directly would read holes as zeros.
**
** No SQLite headers: the few structs below are declared from the documented, stable
** ABI (sqlite3_io_methods v3, sqlite3_vfs v3).
*/
#include "vfs.h"
#include "pagestore.h"
#include "wal_index.h"
#include "txn.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

typedef long long sqlite3_int64;
typedef struct tdb_file tdb_file;
typedef struct tdb_io_methods tdb_io_methods;
typedef struct tdb_sqlite3_vfs tdb_sqlite3_vfs;
typedef void (*tdb_syscall_ptr)(void);

struct tdb_file {
    const tdb_io_methods *pMethods;
};

struct tdb_io_methods {
    int iVersion;
    int (*xClose)(tdb_file *);
    int (*xRead)(tdb_file *, void *, int iAmt, sqlite3_int64 iOfst);
    int (*xWrite)(tdb_file *, const void *, int iAmt, sqlite3_int64 iOfst);
    int (*xTruncate)(tdb_file *, sqlite3_int64 size);
    int (*xSync)(tdb_file *, int flags);
    int (*xFileSize)(tdb_file *, sqlite3_int64 *pSize);
    int (*xLock)(tdb_file *, int);
    int (*xUnlock)(tdb_file *, int);
    int (*xCheckReservedLock)(tdb_file *, int *pResOut);
    int (*xFileControl)(tdb_file *, int op, void *pArg);
    int (*xSectorSize)(tdb_file *);
    int (*xDeviceCharacteristics)(tdb_file *);
    int (*xShmMap)(tdb_file *, int iPg, int pgsz, int, void volatile **);
    int (*xShmLock)(tdb_file *, int offset, int n, int flags);
    void (*xShmBarrier)(tdb_file *);
    int (*xShmUnmap)(tdb_file *, int deleteFlag);
    int (*xFetch)(tdb_file *, sqlite3_int64 iOfst, int iAmt, void **pp);
    int (*xUnfetch)(tdb_file *, sqlite3_int64 iOfst, void *p);
};

struct tdb_sqlite3_vfs {
    int iVersion;
    int szOsFile;
    int mxPathname;
    tdb_sqlite3_vfs *pNext;
    const char *zName;
    void *pAppData;
    int (*xOpen)(tdb_sqlite3_vfs *, const char *zName, tdb_file *, int flags, int *pOutFlags);
    int (*xDelete)(tdb_sqlite3_vfs *, const char *zName, int syncDir);
    int (*xAccess)(tdb_sqlite3_vfs *, const char *zName, int flags, int *pResOut);
    int (*xFullPathname)(tdb_sqlite3_vfs *, const char *zName, int nOut, char *zOut);
    void *(*xDlOpen)(tdb_sqlite3_vfs *, const char *zFilename);
    void (*xDlError)(tdb_sqlite3_vfs *, int nByte, char *zErrMsg);
    void (*(*xDlSym)(tdb_sqlite3_vfs *, void *, const char *zSymbol))(void);
    void (*xDlClose)(tdb_sqlite3_vfs *, void *);
    int (*xRandomness)(tdb_sqlite3_vfs *, int nByte, char *zOut);
    int (*xSleep)(tdb_sqlite3_vfs *, int microseconds);
    int (*xCurrentTime)(tdb_sqlite3_vfs *, double *);
    int (*xGetLastError)(tdb_sqlite3_vfs *, int, char *);
    int (*xCurrentTimeInt64)(tdb_sqlite3_vfs *, sqlite3_int64 *);
    int (*xSetSystemCall)(tdb_sqlite3_vfs *, const char *zName, tdb_syscall_ptr);
    tdb_syscall_ptr (*xGetSystemCall)(tdb_sqlite3_vfs *, const char *zName);
    const char *(*xNextSystemCall)(tdb_sqlite3_vfs *, const char *zName);
};

#define SQLITE_OK 0
#define SQLITE_ERROR 1
#define SQLITE_BUSY 5
#define SQLITE_NOTFOUND 12
#define SQLITE_IOERR 10
#define SQLITE_IOERR_LOCK (10 | (15 << 8))
#define SQLITE_IOERR_WRITE (10 | (3 << 8))
#define SQLITE_LOCK_NONE 0
#define SQLITE_LOCK_SHARED 1
#define SQLITE_LOCK_RESERVED 2
#define SQLITE_LOCK_EXCLUSIVE 4
#define SQLITE_SHM_EXCLUSIVE 8
#define SQLITE_SHM_LOCK 2
#define SQLITE_SHM_SHARED 4
#define SQLITE_CANTOPEN 14
#define SQLITE_OK_LOAD_PERMANENTLY 256
#define SQLITE_OPEN_MAIN_DB 0x00000100
#define SQLITE_FCNTL_SIZE_HINT 5
#define SQLITE_FCNTL_PERSIST_WAL 10
#define SQLITE_FCNTL_MMAP_SIZE 18
#define SQLITE_FCNTL_PRAGMA 14
#define SQLITE_FCNTL_CKPT_DONE 37
#define SQLITE_FCNTL_CKPT_START 39
#define SQLITE_SHM_UNLOCK 1
#define WAL_READ_LOCK0 3
#define SQLITE_IOCAP_BATCH_ATOMIC 0x00004000

/* sqlite3_api_routines slots (append-only table of function pointers). */
#define API_LIBVERSION_NUMBER 67
#define API_VFS_FIND 141
#define API_VFS_REGISTER 142

typedef tdb_sqlite3_vfs *(*vfs_find_fn)(const char *);
typedef int (*vfs_register_fn)(tdb_sqlite3_vfs *, int);

static const char VFS_NAME[] = "turso_dbapi";

typedef struct TdbFile {
    tdb_file base;
    tdb_store *store;  /* NULL: pass-through */
    uint64_t conn_id;
    uint32_t no_wal;   /* (16) */
    uint32_t lock_level; /* (23) the level SQLite holds on it */
    tdb_wi_ckpt *ckpt; /* (18) set between SQLITE_FCNTL_CKPT_START and _DONE */
    uint64_t txn;         /* (20) the current write transaction's id */
    uint32_t txn_marked;  /* (20) the sqlite_tdb_txn table returned it already */
    uint32_t locked;      /* (21) SQLite has locked it since xOpen */
    uint64_t pad2;     /* keeps the real file 16-byte aligned */
} TdbFile;

#define REAL(p) ((tdb_file *)(((TdbFile *)(p)) + 1))
_Static_assert(sizeof(TdbFile) % 16 == 0, "the real file after TdbFile must stay 16-byte aligned");

static tdb_sqlite3_vfs g_vfs; /* filled once, (10) */
static tdb_sqlite3_vfs *g_root;
static int g_route;
static pthread_mutex_t g_reg_mu = PTHREAD_MUTEX_INITIALIZER;

/* ------------------------------------------------ pass-through methods (any file) */

static int ptClose(tdb_file *f) { return REAL(f)->pMethods->xClose(REAL(f)); }
static int ptRead(tdb_file *f, void *b, int n, sqlite3_int64 o) { return REAL(f)->pMethods->xRead(REAL(f), b, n, o); }
static int ptWrite(tdb_file *f, const void *b, int n, sqlite3_int64 o) { return REAL(f)->pMethods->xWrite(REAL(f), b, n, o); }
static int ptTruncate(tdb_file *f, sqlite3_int64 n) { return REAL(f)->pMethods->xTruncate(REAL(f), n); }
static uint64_t g_pt_syncs; /* (22) xSync calls of pass-through files (journals, WALs, plain files) */
static int ptSync(tdb_file *f, int fl) {
    __atomic_fetch_add(&g_pt_syncs, 1, __ATOMIC_RELAXED); /* (22) */
    return REAL(f)->pMethods->xSync(REAL(f), fl);
}
uint64_t tdb_vfs_passthrough_syncs(void) { return __atomic_load_n(&g_pt_syncs, __ATOMIC_RELAXED); }
static int ptFileSize(tdb_file *f, sqlite3_int64 *p) { return REAL(f)->pMethods->xFileSize(REAL(f), p); }
static int ptLock(tdb_file *f, int l) { return REAL(f)->pMethods->xLock(REAL(f), l); }
static int ptUnlock(tdb_file *f, int l) { return REAL(f)->pMethods->xUnlock(REAL(f), l); }
static int ptCheckReservedLock(tdb_file *f, int *r) { return REAL(f)->pMethods->xCheckReservedLock(REAL(f), r); }
static int ptFileControl(tdb_file *f, int op, void *a) { return REAL(f)->pMethods->xFileControl(REAL(f), op, a); }
static int ptSectorSize(tdb_file *f) { return REAL(f)->pMethods->xSectorSize(REAL(f)); }
static int ptDeviceCharacteristics(tdb_file *f) { return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f)); }
static int ptShmMap(tdb_file *f, int pg, int sz, int ext, void volatile **pp) {
    const tdb_io_methods *m = REAL(f)->pMethods;
    return m->iVersion >= 2 && m->xShmMap ? m->xShmMap(REAL(f), pg, sz, ext, pp) : SQLITE_IOERR;
}
static int ptShmLock(tdb_file *f, int o, int n, int fl) {
    const tdb_io_methods *m = REAL(f)->pMethods;
    return m->iVersion >= 2 && m->xShmLock ? m->xShmLock(REAL(f), o, n, fl) : SQLITE_IOERR;
}
static void ptShmBarrier(tdb_file *f) {
    const tdb_io_methods *m = REAL(f)->pMethods;
    if (m->iVersion >= 2 && m->xShmBarrier) m->xShmBarrier(REAL(f));
}
static int ptShmUnmap(tdb_file *f, int del) {
    const tdb_io_methods *m = REAL(f)->pMethods;
    return m->iVersion >= 2 && m->xShmUnmap ? m->xShmUnmap(REAL(f), del) : SQLITE_OK;
}
static int ptFetch(tdb_file *f, sqlite3_int64 o, int n, void **pp) {
    const tdb_io_methods *m = REAL(f)->pMethods;
    if (m->iVersion >= 3 && m->xFetch) return m->xFetch(REAL(f), o, n, pp);
    *pp = 0;
    return SQLITE_OK;
}
static int ptUnfetch(tdb_file *f, sqlite3_int64 o, void *p) {
    const tdb_io_methods *m = REAL(f)->pMethods;
    return m->iVersion >= 3 && m->xUnfetch ? m->xUnfetch(REAL(f), o, p) : SQLITE_OK;
}

static const tdb_io_methods pass_methods = {
    3,                       /* iVersion */
    ptClose,                 /* xClose */
    ptRead,                  /* xRead */
    ptWrite,                 /* xWrite */
    ptTruncate,              /* xTruncate */
    ptSync,                  /* xSync */
    ptFileSize,              /* xFileSize */
    ptLock,                  /* xLock */
    ptUnlock,                /* xUnlock */
    ptCheckReservedLock,     /* xCheckReservedLock */
    ptFileControl,           /* xFileControl */
    ptSectorSize,            /* xSectorSize */
    ptDeviceCharacteristics, /* xDeviceCharacteristics */
    ptShmMap,                /* xShmMap */
    ptShmLock,               /* xShmLock */
    ptShmBarrier,            /* xShmBarrier */
    ptShmUnmap,              /* xShmUnmap */
    ptFetch,                 /* xFetch */
    ptUnfetch,               /* xUnfetch */
};

/* ------------------------------------------------ lazy methods (store-backed main db) */

static int lzClose(tdb_file *f) {
    TdbFile *p = (TdbFile *)f;
    tdb_wi_ckpt_end(p->ckpt);
    p->ckpt = NULL;
    int rc = REAL(f)->pMethods->xClose(REAL(f));
    tdb_store_release(p->store);
    p->store = NULL;
    return rc;
}
static int lzRead(tdb_file *f, void *b, int n, sqlite3_int64 o) {
    TdbFile *p = (TdbFile *)f;
    if (!p->locked) return tdb_store_read_unlocked(p->store, p->conn_id, b, n, o); /* (21) */
    return tdb_store_read(p->store, p->conn_id, b, n, o); /* (2)(3)(6)(7) */
}
static int shm_map_fn(void *f, int pg, int sz, int ext, void volatile **pp) {
    return ptShmMap((tdb_file *)f, pg, sz, ext, pp);
}
static void shm_barrier_fn(void *f) { ptShmBarrier((tdb_file *)f); }
static int lzWrite(tdb_file *f, const void *b, int n, sqlite3_int64 o) {
    TdbFile *p = (TdbFile *)f;
    uint32_t ps = tdb_store_page_size(p->store);
    if (p->ckpt && (uint32_t)n == ps && o % ps == 0) { /* (18) */
        tdb_wi_shm shm = {f, shm_map_fn, shm_barrier_fn};
        uint32_t pgno = (uint32_t)(o / ps) + 1;
        const uint8_t *synced;
        int k = tdb_wi_ckpt_classify(p->ckpt, &shm, pgno, b, &synced);
        if (k == TDB_WI_CKPT_SYNCED) return tdb_store_backfill_synced(p->store, pgno, b);
        if (k == TDB_WI_CKPT_SHADOWED) { /* wal_index.c rule (9) */
            tdb_store_raise_remote_size(p->store, (uint64_t)pgno * ps);
            if (tdb_store_put_synced(p->store, pgno, synced, 1, 0) != 1) return SQLITE_IOERR_WRITE;
        }
    }
    return tdb_store_write(p->store, p->conn_id, b, n, o); /* (5) */
}
static int lzTruncate(tdb_file *f, sqlite3_int64 n) {
    return tdb_store_truncate(((TdbFile *)f)->store, n); /* (5) */
}
static int lzSync(tdb_file *f, int fl) { /* (22) */
    (void)fl; /* fdatasync either way: sizes are data here (the logical size lives in the sidecar) */
    return tdb_store_sync_parts(((TdbFile *)f)->store,
                                TDB_SYNC_LOCAL | TDB_SYNC_SYNCED | TDB_SYNC_MAP | TDB_SYNC_DIRTY_ONLY);
}
static int lzFileSize(tdb_file *f, sqlite3_int64 *pSize) {
    *pSize = (sqlite3_int64)tdb_store_logical_size(((TdbFile *)f)->store); /* (1) */
    return SQLITE_OK;
}
/* (16) SQLite matches the mode as a case-insensitive prefix ("w", "Wa" and "WAL" all mean
** WAL); the argument is SQLite's own writable copy (sqlite3Pragma frees it afterwards). */
static void refuse_wal(char **arg) {
    const char *name = arg[1], *mode = arg[2];
    if (!name || !mode || strcasecmp(name, "journal_mode") != 0) return;
    size_t n = strlen(mode);
    if (n == 0 || n > 3 || strncasecmp(mode, "wal", n) != 0) return;
    arg[2][0] = '?'; /* names no mode: SQLite returns the mode in effect */
}
/* A file beside ``path``: its name with ``suffix`` appended (malloc'd; NULL when out of memory). */
static char *suffixed(const char *path, const char *suffix) {
    size_t n = strlen(path), k = strlen(suffix) + 1;
    char *z = malloc(n + k);
    if (z) {
        memcpy(z, path, n);
        memcpy(z + n, suffix, k);
    }
    return z;
}
/* (23) SQLite's WAL close, after its checkpoint: the frames are all in the database. */
static void truncate_wal(TdbFile *p) {
    char *z = suffixed(tdb_store_path(p->store), "-wal");
    if (!z) return;
    int fd = open(z, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (ftruncate(fd, 0) != 0) { /* a WAL left whole is recovered as after a crash */ }
        close(fd);
    }
    free(z);
}
static int lzFileControl(tdb_file *f, int op, void *a) {
    TdbFile *p = (TdbFile *)f;
    if (op == SQLITE_FCNTL_PRAGMA) {
        char **arg = (char **)a;
        if (arg[1] && strcasecmp(arg[1], "tdb_wal_job") == 0) { /* (17) */
            tdb_wi_shm shm = {f, shm_map_fn, shm_barrier_fn};
            tdb_wi_run(arg[2] ? strtoull(arg[2], NULL, 10) : 0, &shm);
            return SQLITE_NOTFOUND; /* the outcome is in the job; the pragma then does nothing */
        }
        if (p->no_wal) refuse_wal(arg);
    }
    if (op == SQLITE_FCNTL_CKPT_START) { /* (18) */
        tdb_wi_shm shm = {f, shm_map_fn, shm_barrier_fn};
        tdb_wi_ckpt_end(p->ckpt);
        p->ckpt = tdb_wi_ckpt_begin(&shm, tdb_store_path(p->store), tdb_store_page_size(p->store));
    } else if (op == SQLITE_FCNTL_CKPT_DONE) {
        tdb_wi_ckpt_end(p->ckpt);
        p->ckpt = NULL;
    }
    if (op == SQLITE_FCNTL_PERSIST_WAL) { /* (23) */
        int *persist = (int *)a;
        if (*persist < 0 && p->lock_level == SQLITE_LOCK_EXCLUSIVE) truncate_wal(p);
        if (*persist < 0) *persist = 1;
        return SQLITE_OK;
    }
    if (op == SQLITE_FCNTL_SIZE_HINT) return SQLITE_OK; /* (11) */
    if (op == SQLITE_FCNTL_MMAP_SIZE) {                 /* (4) */
        *(sqlite3_int64 *)a = 0;
        return SQLITE_OK;
    }
    return REAL(f)->pMethods->xFileControl(REAL(f), op, a);
}
/* (13) the apply flag was set when this connection took SHARED. */
static int lzApplyInProgress(tdb_file *f) {
    TdbFile *p = (TdbFile *)f;
    for (int tries = 0; tries < 3; tries++) {
        REAL(f)->pMethods->xUnlock(REAL(f), SQLITE_LOCK_NONE); /* Python may need EXCLUSIVE */
        p->lock_level = SQLITE_LOCK_NONE;
        int r = tdb_py_applying(tdb_store_py_handle(p->store), p->conn_id);
        if (r == TDB_APPLY_BUSY) return SQLITE_BUSY;
        if (r != TDB_APPLY_RECOVERED && r != TDB_APPLY_PROCEED) {
            tdb_set_py_failure(); /* (14) */
            return SQLITE_IOERR_LOCK;
        }
        int rc = REAL(f)->pMethods->xLock(REAL(f), SQLITE_LOCK_SHARED);
        if (rc != SQLITE_OK || r == TDB_APPLY_PROCEED || !tdb_store_applying(p->store)) return rc;
    }
    REAL(f)->pMethods->xUnlock(REAL(f), SQLITE_LOCK_NONE);
    return SQLITE_BUSY; /* pullers keep dying under us: let the busy handler decide */
}
static void lzTxnBegin(tdb_file *f) { /* (20) */
    ((TdbFile *)f)->txn = tdb_txn_fresh();
    ((TdbFile *)f)->txn_marked = 0;
}
static int lzLock(tdb_file *f, int level) {
    int rc = REAL(f)->pMethods->xLock(REAL(f), level);
    if (rc == SQLITE_OK) ((TdbFile *)f)->locked = 1; /* (21) past the header pre-read */
    if (rc == SQLITE_OK && level > (int)((TdbFile *)f)->lock_level) ((TdbFile *)f)->lock_level = (uint32_t)level; /* (23) */
    if (rc == SQLITE_OK && level == SQLITE_LOCK_RESERVED) lzTxnBegin(f); /* (20) */
    if (rc != SQLITE_OK || level != SQLITE_LOCK_SHARED) return rc;
    tdb_clear_py_failure(); /* (14) */
    if (!tdb_store_applying(((TdbFile *)f)->store)) return SQLITE_OK; /* (13) */
    return lzApplyInProgress(f);
}
static int lzUnlock(tdb_file *f, int level) {
    int rc = ptUnlock(f, level);
    if (rc == SQLITE_OK) ((TdbFile *)f)->lock_level = (uint32_t)level; /* (23) */
    return rc;
}
static int lzShmLock(tdb_file *f, int o, int n, int fl) {
    if (fl == (SQLITE_SHM_LOCK | SQLITE_SHM_SHARED)) {
        TdbFile *p = (TdbFile *)f;
        tdb_clear_py_failure(); /* (14) */
        if (o >= WAL_READ_LOCK0 && tdb_store_applying(p->store)) { /* (19) */
            int r = tdb_py_applying(tdb_store_py_handle(p->store), p->conn_id);
            if (r == TDB_APPLY_BUSY) return SQLITE_BUSY;
            if (r != TDB_APPLY_RECOVERED && r != TDB_APPLY_PROCEED) {
                tdb_set_py_failure(); /* (14) */
                return SQLITE_IOERR_LOCK;
            }
        }
    }
    int rc = ptShmLock(f, o, n, fl);
    if (rc == SQLITE_OK && o == 0 && n == 1 && fl == (SQLITE_SHM_LOCK | SQLITE_SHM_EXCLUSIVE))
        lzTxnBegin(f); /* (20) offset 0: WAL_WRITE_LOCK */
    return rc;
}
static int lzDeviceCharacteristics(tdb_file *f) {
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f)) & ~SQLITE_IOCAP_BATCH_ATOMIC; /* (11) */
}
static int lzFetch(tdb_file *f, sqlite3_int64 o, int n, void **pp) {
    (void)f, (void)o, (void)n;
    *pp = 0; /* (4) */
    return SQLITE_OK;
}
static int lzUnfetch(tdb_file *f, sqlite3_int64 o, void *p) {
    (void)f, (void)o, (void)p;
    return SQLITE_OK;
}

static const tdb_io_methods lazy_methods = {
    3,                       /* iVersion */
    lzClose,                 /* xClose */
    lzRead,                  /* xRead */
    lzWrite,                 /* xWrite */
    lzTruncate,              /* xTruncate */
    lzSync,                  /* xSync */
    lzFileSize,              /* xFileSize */
    lzLock,                  /* xLock (13)(14) */
    lzUnlock,                /* xUnlock (23) */
    ptCheckReservedLock,     /* xCheckReservedLock */
    lzFileControl,           /* xFileControl */
    ptSectorSize,            /* xSectorSize */
    lzDeviceCharacteristics, /* xDeviceCharacteristics */
    ptShmMap,                /* xShmMap */
    lzShmLock,               /* xShmLock (14) */
    ptShmBarrier,            /* xShmBarrier */
    ptShmUnmap,              /* xShmUnmap */
    lzFetch,                 /* xFetch */
    lzUnfetch,               /* xUnfetch */
};

uint64_t tdb_vfs_txn_mark(void *file) { /* (20) */
    TdbFile *p = (TdbFile *)file;
    if (p->base.pMethods != &lazy_methods || p->txn_marked || !p->txn) return 0;
    p->txn_marked = 1;
    return p->txn;
}

/* ------------------------------------------------ VFS methods */

/* URI parameters follow a main database's name: "name\0key\0value\0...\0" (the layout
** sqlite3_uri_parameter walks; only valid for names SQLite passes to xOpen). */
static const char *uri_param(const char *z, const char *key) {
    z += strlen(z) + 1;
    while (z[0]) {
        int match = strcmp(z, key) == 0;
        z += strlen(z) + 1;
        if (match) return z;
        z += strlen(z) + 1;
    }
    return NULL;
}

static int has_sidecar(const char *zName) {
    char *z = suffixed(zName, "-tdbmap");
    if (!z) return 0;
    int exists = access(z, F_OK) == 0;
    free(z);
    return exists;
}

static int vOpen(tdb_sqlite3_vfs *vfs, const char *zName, tdb_file *f, int flags, int *pOutFlags) {
    (void)vfs;
    TdbFile *p = (TdbFile *)f;
    memset(p, 0, sizeof *p);
    if ((flags & SQLITE_OPEN_MAIN_DB) && zName) {
        p->store = tdb_store_lookup(zName);
        if (p->store) {
            const char *id = uri_param(zName, "tdbconn");
            p->conn_id = id ? strtoull(id, NULL, 10) : 0;
            const char *nowal = uri_param(zName, "tdbnowal");
            p->no_wal = nowal && nowal[0] == '1';
        } else if (has_sidecar(zName)) {
            f->pMethods = 0;
            return SQLITE_CANTOPEN; /* (12) */
        }
    }
    int rc = g_root->xOpen(g_root, zName, REAL(f), flags, pOutFlags);
    if (rc != SQLITE_OK) {
        tdb_store_release(p->store);
        p->store = NULL;
        f->pMethods = 0; /* the real file did not open: nothing to close */
        return rc;
    }
    f->pMethods = p->store ? &lazy_methods : &pass_methods;
    return SQLITE_OK;
}

static int vDelete(tdb_sqlite3_vfs *v, const char *z, int d) { (void)v; return g_root->xDelete(g_root, z, d); }
static int vAccess(tdb_sqlite3_vfs *v, const char *z, int fl, int *r) { (void)v; return g_root->xAccess(g_root, z, fl, r); }
static int vFullPathname(tdb_sqlite3_vfs *v, const char *z, int n, char *out) { (void)v; return g_root->xFullPathname(g_root, z, n, out); }
static void *vDlOpen(tdb_sqlite3_vfs *v, const char *z) { (void)v; return g_root->xDlOpen(g_root, z); }
static void vDlError(tdb_sqlite3_vfs *v, int n, char *z) { (void)v; g_root->xDlError(g_root, n, z); }
static void (*vDlSym(tdb_sqlite3_vfs *v, void *h, const char *z))(void) { (void)v; return g_root->xDlSym(g_root, h, z); }
static void vDlClose(tdb_sqlite3_vfs *v, void *h) { (void)v; g_root->xDlClose(g_root, h); }
static int vRandomness(tdb_sqlite3_vfs *v, int n, char *z) { (void)v; return g_root->xRandomness(g_root, n, z); }
static int vSleep(tdb_sqlite3_vfs *v, int us) { (void)v; return g_root->xSleep(g_root, us); }
static int vCurrentTime(tdb_sqlite3_vfs *v, double *t) { (void)v; return g_root->xCurrentTime(g_root, t); }
static int vGetLastError(tdb_sqlite3_vfs *v, int n, char *z) { (void)v; return g_root->xGetLastError(g_root, n, z); }
static int vCurrentTimeInt64(tdb_sqlite3_vfs *v, sqlite3_int64 *t) { (void)v; return g_root->xCurrentTimeInt64(g_root, t); }
static int vSetSystemCall(tdb_sqlite3_vfs *v, const char *z, tdb_syscall_ptr p) { (void)v; return g_root->xSetSystemCall(g_root, z, p); }
static tdb_syscall_ptr vGetSystemCall(tdb_sqlite3_vfs *v, const char *z) { (void)v; return g_root->xGetSystemCall(g_root, z); }
static const char *vNextSystemCall(tdb_sqlite3_vfs *v, const char *z) { (void)v; return g_root->xNextSystemCall(g_root, z); }

/* ------------------------------------------------ registration (10) */

static int do_register(vfs_find_fn find, vfs_register_fn reg, int route) {
    int rc = TDB_VFS_OK;
    pthread_mutex_lock(&g_reg_mu);
    tdb_sqlite3_vfs *existing = find(VFS_NAME);
    if (existing) {
        rc = existing == &g_vfs ? TDB_VFS_OK : TDB_VFS_NAME_TAKEN;
    } else if (g_route) {
        rc = TDB_VFS_OTHER_INSTANCE; /* our struct is linked into another library's list */
    } else {
        tdb_sqlite3_vfs *root = find(NULL);
        if (!root || root->iVersion < 3) {
            rc = TDB_VFS_NO_DEFAULT;
        } else {
            g_root = root;
            g_vfs.iVersion = 3;
            g_vfs.szOsFile = (int)sizeof(TdbFile) + root->szOsFile;
            g_vfs.mxPathname = root->mxPathname;
            g_vfs.zName = VFS_NAME;
            g_vfs.xOpen = vOpen;
            g_vfs.xDelete = vDelete;
            g_vfs.xAccess = vAccess;
            g_vfs.xFullPathname = vFullPathname;
            g_vfs.xDlOpen = vDlOpen;
            g_vfs.xDlError = vDlError;
            g_vfs.xDlSym = vDlSym;
            g_vfs.xDlClose = vDlClose;
            g_vfs.xRandomness = vRandomness;
            g_vfs.xSleep = vSleep;
            g_vfs.xCurrentTime = vCurrentTime;
            g_vfs.xGetLastError = vGetLastError;
            g_vfs.xCurrentTimeInt64 = vCurrentTimeInt64;
            g_vfs.xSetSystemCall = vSetSystemCall;
            g_vfs.xGetSystemCall = vGetSystemCall;
            g_vfs.xNextSystemCall = vNextSystemCall;
            if (reg(&g_vfs, 0) != SQLITE_OK) {
                rc = TDB_VFS_REGISTER_FAILED;
            } else {
                g_route = route;
            }
        }
    }
    pthread_mutex_unlock(&g_reg_mu);
    return rc;
}

int tdb_vfs_register(void *vfs_find, void *vfs_register) {
    return do_register((vfs_find_fn)vfs_find, (vfs_register_fn)vfs_register, 'A');
}

int tdb_vfs_route(void) { return g_route; }
const char *tdb_vfs_name(void) { return VFS_NAME; }

/* Route B: the loadable-extension entry point (name derived from "_tdb_native..."). */
__attribute__((visibility("default"))) int sqlite3_tdbnative_init(void *db, char **pzErrMsg,
                                                                  const void *pApi) {
    (void)db, (void)pzErrMsg;
    void *const *api = (void *const *)pApi;
    int (*libversion)(void) = (int (*)(void))api[API_LIBVERSION_NUMBER];
    if (libversion() < 3008007) return SQLITE_ERROR; /* vfs v3 + this table layout */
    int rc = do_register((vfs_find_fn)api[API_VFS_FIND], (vfs_register_fn)api[API_VFS_REGISTER], 'B');
    if (rc == TDB_VFS_OK) rc = tdb_txn_setup_api(pApi); /* (20) */
    return rc == TDB_VFS_OK ? SQLITE_OK_LOAD_PERMANENTLY : SQLITE_ERROR;
}
