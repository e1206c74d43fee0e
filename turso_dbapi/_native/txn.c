/*
** txn.c — local write-transaction ids for change capture (sync/capture.py).
**
** The capture triggers log one row per changed key; push splits its batches only at the
** boundaries of local transactions (sync/batches.py), so every log row must say which
** transaction wrote it, in the same transaction, for every connection of every process.
** SQL cannot see a transaction start, the VFS can:
**
** RULES
**   (1) tdb_txn_fresh() returns a new id: a per-process random 62-bit base (seeded once
**       from /dev/urandom, else time and pid) plus a counter, so ids of different
**       processes collide with negligible probability. Only adjacent transactions in the
**       log need to differ; a collision would merge two of them (safe: a bigger batch).
**   (2) The VFS (vfs.c rule (20)) gives a lazy main file a fresh id when a write
**       transaction starts: xLock(RESERVED) in rollback mode, the exclusive WAL_WRITE
**       shm lock in WAL mode. Nothing else takes those locks within a transaction.
**   (3) sqlite_tdb_txn — a one-row, one-column eponymous virtual table registered on
**       every connection of this process through sqlite3_auto_extension — asks the
**       connection's main file (SQLITE_FCNTL_FILE_POINTER) for its transaction: its id
**       on the FIRST read of a transaction, NULL on the following ones and on any
**       connection whose main file is not ours. The capture triggers read it once per
**       changed row, so the first log row of each transaction carries its id and the rest
**       a NULL (no bytes): a boundary is a row whose id is not NULL. Losing a mark (a
**       savepoint rolled back the row that carried it) merges two transactions, which is
**       always safe for push. In exclusive locking mode the lock is never released, so
**       every later transaction of that connection shares one id (merged, safe).
**       A table and not a SQL function: a function call inside a trigger makes SQLite
**       give every statement that fires it a statement journal (measured +0.25 us a
**       row on a bulk insert; the table read costs +0.12 us). Tagged
**       SQLITE_VTAB_INNOCUOUS, so triggers may read it with trusted_schema=OFF.
**   (4) Registration: route A passes dlsym'd addresses (tdb_txn_setup); route B the
**       api routines table of the extension entry point (tdb_txn_setup_api). Either way the
**       auto extension uses the function pointers recorded here, not its pApi argument
**       (NULL in a library built without load_extension).
**   (5) The table is read once per changed row, so its common case must cost nothing
**       more than the scan itself (a file-control lookup takes the connection's mutex
**       and searches the schema names). tdb_txn_fresh()
**       also advances a process-wide epoch; each connection keeps the epoch of its last
**       lookup, and while the epoch is unchanged no write transaction has started in this
**       process since, so the answer is NULL without a lookup. A connection's own
**       transaction starts on its own thread before its first read, so it always forces
**       the lookup. One cursor per connection is kept for reuse (no allocation per row).
*/
#include "txn.h"
#include "vfs.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef long long i64;
typedef void tdb_ctx;
typedef void tdb_db;

/* The documented, stable sqlite3_vtab / sqlite3_vtab_cursor / sqlite3_module v1 ABI. */
typedef struct tdb_vtab {
    const void *pModule;
    int nRef;
    char *zErrMsg;
} tdb_vtab;
typedef struct tdb_vtab_cursor {
    tdb_vtab *pVtab;
} tdb_vtab_cursor;
typedef struct tdb_module {
    int iVersion;
    void *xCreate;
    int (*xConnect)(tdb_db *, void *, int, const char *const *, tdb_vtab **, char **);
    int (*xBestIndex)(tdb_vtab *, void *);
    int (*xDisconnect)(tdb_vtab *);
    void *xDestroy;
    int (*xOpen)(tdb_vtab *, tdb_vtab_cursor **);
    int (*xClose)(tdb_vtab_cursor *);
    int (*xFilter)(tdb_vtab_cursor *, int, const char *, int, void **);
    int (*xNext)(tdb_vtab_cursor *);
    int (*xEof)(tdb_vtab_cursor *);
    int (*xColumn)(tdb_vtab_cursor *, tdb_ctx *, int);
    int (*xRowid)(tdb_vtab_cursor *, i64 *);
    void *xUpdate, *xBegin, *xSync, *xCommit, *xRollback, *xFindFunction, *xRename;
} tdb_module;

#define SQLITE_OK 0
#define SQLITE_NOMEM 7
#define SQLITE_FCNTL_FILE_POINTER 7
#define SQLITE_VTAB_INNOCUOUS 2

/* What txn.c calls of SQLite, in the order of tdb_txn_setup's array (txn.h). */
static struct {
    int (*auto_extension)(void (*)(void));
    int (*create_module)(tdb_db *, const char *, const tdb_module *, void *);
    int (*declare_vtab)(tdb_db *, const char *);
    int (*vtab_config)(tdb_db *, int, ...);
    int (*file_control)(tdb_db *, const char *, int, void *);
    void (*result_int64)(tdb_ctx *, i64);
    void (*result_null)(tdb_ctx *);
} g;
static int g_ready;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;

/* sqlite3_api_routines slots (append-only table; see vfs.c), in g's order. */
static const int API_SLOTS[TDB_TXN_NFUNCS] = {192, 47, 50, 177, 127, 83, 84};

/* ------------------------------------------------ (1) ids */

static uint64_t g_base, g_next; /* g_next is also the epoch of (5) */
static pthread_once_t g_seed_once = PTHREAD_ONCE_INIT;

static void seed(void) {
    uint64_t s = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, &s, sizeof s) != (ssize_t)sizeof s) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s = ((uint64_t)ts.tv_sec * 1000000007u) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    }
    if (fd >= 0) close(fd);
    g_base = s & 0x3FFFFFFFFFFFFFFFull;
}

uint64_t tdb_txn_fresh(void) {
    pthread_once(&g_seed_once, seed);
    uint64_t n = __atomic_add_fetch(&g_next, 1, __ATOMIC_RELAXED);
    uint64_t id = (g_base + n) & 0x7FFFFFFFFFFFFFFFull;
    return id ? id : 1;
}

/* ------------------------------------------------ (3) the sqlite_tdb_txn table */

typedef struct TxnCursor {
    tdb_vtab_cursor base;
    uint64_t id; /* 0: NULL */
    int eof;
} TxnCursor;

typedef struct TxnTab {
    tdb_vtab base;
    tdb_db *db;
    uint64_t seen;    /* (5) the epoch of this connection's last lookup; UINT64_MAX: none */
    TxnCursor spare;  /* (5) the cursor of one scan at a time: no allocation per row */
    int spare_busy;
} TxnTab;

static uint64_t current_mark(TxnTab *t) {
    uint64_t epoch = __atomic_load_n(&g_next, __ATOMIC_RELAXED);
    if (t->seen == epoch) return 0; /* (5) */
    t->seen = epoch;
    void *file = NULL;
    if (g.file_control(t->db, "main", SQLITE_FCNTL_FILE_POINTER, &file) != SQLITE_OK || !file) return 0;
    return tdb_vfs_txn_mark(file);
}

static int tConnect(tdb_db *db, void *aux, int argc, const char *const *argv, tdb_vtab **pp, char **err) {
    (void)aux, (void)argc, (void)argv, (void)err;
    int rc = g.declare_vtab(db, "CREATE TABLE x(id INTEGER)");
    if (rc != SQLITE_OK) return rc;
    TxnTab *t = calloc(1, sizeof *t);
    if (!t) return SQLITE_NOMEM;
    t->db = db;
    t->seen = UINT64_MAX;
    g.vtab_config(db, SQLITE_VTAB_INNOCUOUS); /* usable in triggers with trusted_schema=OFF */
    *pp = &t->base;
    return SQLITE_OK;
}
static int tBestIndex(tdb_vtab *v, void *info) { (void)v, (void)info; return SQLITE_OK; }
static int tDisconnect(tdb_vtab *v) { free(v); return SQLITE_OK; }
static int tOpen(tdb_vtab *v, tdb_vtab_cursor **pp) {
    TxnTab *t = (TxnTab *)v;
    TxnCursor *c = t->spare_busy ? calloc(1, sizeof *c) : &t->spare;
    if (!c) return SQLITE_NOMEM;
    t->spare_busy |= c == &t->spare;
    *pp = &c->base;
    return SQLITE_OK;
}
static int tClose(tdb_vtab_cursor *cur) {
    TxnTab *t = (TxnTab *)cur->pVtab;
    if (cur == &t->spare.base) t->spare_busy = 0;
    else free(cur);
    return SQLITE_OK;
}
static int tFilter(tdb_vtab_cursor *cur, int n, const char *s, int argc, void **argv) {
    (void)n, (void)s, (void)argc, (void)argv;
    TxnCursor *c = (TxnCursor *)cur;
    c->id = current_mark((TxnTab *)cur->pVtab);
    c->eof = 0;
    return SQLITE_OK;
}
static int tNext(tdb_vtab_cursor *cur) { ((TxnCursor *)cur)->eof = 1; return SQLITE_OK; }
static int tEof(tdb_vtab_cursor *cur) { return ((TxnCursor *)cur)->eof; }
static int tColumn(tdb_vtab_cursor *cur, tdb_ctx *ctx, int i) {
    (void)i;
    uint64_t id = ((TxnCursor *)cur)->id;
    if (id) g.result_int64(ctx, (i64)id);
    else g.result_null(ctx);
    return SQLITE_OK;
}
static int tRowid(tdb_vtab_cursor *cur, i64 *p) { (void)cur; *p = 1; return SQLITE_OK; }

static const tdb_module txn_module = {
    1, NULL /* eponymous only */, tConnect, tBestIndex, tDisconnect, NULL, tOpen, tClose, tFilter, tNext,
    tEof, tColumn, tRowid, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
};

static int txn_entry(tdb_db *db, char **err, const void *api) {
    (void)err, (void)api; /* (4) */
    return g.create_module(db, "sqlite_tdb_txn", &txn_module, NULL);
}

/* ------------------------------------------------ (4) registration */

int tdb_txn_setup(void *const *fns, int n) {
    if (n != TDB_TXN_NFUNCS) return TDB_TXN_FAILED;
    int rc = TDB_TXN_OK;
    pthread_mutex_lock(&g_mu);
    if (!g_ready) {
        memcpy(&g, fns, sizeof g);
        if (g.auto_extension((void (*)(void))txn_entry) == SQLITE_OK)
            g_ready = 1;
        else
            rc = TDB_TXN_FAILED;
    }
    pthread_mutex_unlock(&g_mu);
    return rc;
}

int tdb_txn_setup_api(const void *pApi) {
    void *const *api = (void *const *)pApi;
    void *fns[TDB_TXN_NFUNCS];
    for (int i = 0; i < TDB_TXN_NFUNCS; i++) fns[i] = api[API_SLOTS[i]];
    return tdb_txn_setup(fns, TDB_TXN_NFUNCS);
}
