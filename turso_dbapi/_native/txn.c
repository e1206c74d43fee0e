/*
** txn.c — local write-transaction ids for change capture (sync/capture.py).
**
** The capture triggers log one row per changed key; push splits its batches only at the
** boundaries of local transactions (sync/push.py), so every log row must say which
** transaction wrote it, in the same transaction, for every connection of every process.
** SQL cannot see a transaction start, the VFS can:
**
** RULES
**   (1) tdb_txn_fresh() returns a new id: a per-process random 62-bit base (seeded once
**       from /dev/urandom, else time and pid) plus a counter, so ids of different
**       processes collide with negligible probability. Only adjacent transactions in the
**       log need to differ; a collision would merge two of them (safe: a bigger batch).
**   (2) The VFS (vfs.c rule (17)) gives a lazy main file a fresh id when a write
**       transaction starts: xLock(RESERVED) in rollback mode, the exclusive WAL_WRITE
**       shm lock in WAL mode. Nothing else takes those locks within a transaction.
**   (3) sqlite_tdb_txn() — registered on every connection of this process through
**       sqlite3_auto_extension — asks the connection's main file (SQLITE_FCNTL_FILE_POINTER)
**       for its transaction: the id on the FIRST call of a transaction, NULL on the
**       following ones and on any connection whose main file is not ours. The first log
**       row of each transaction thus carries its id and the rest a NULL (no bytes): a
**       boundary is a row whose id is not NULL. Losing a mark (a savepoint rolled back the
**       row that carried it) merges two transactions, which is always safe for push.
**       In exclusive locking mode the lock is never released, so every later transaction
**       of that connection shares one id (merged, safe).
**   (4) Registration: route A passes dlsym'd addresses (tdb_txn_setup); route B the
**       api routines table of the extension entry point (tdb_txn_setup_api). Either way the
**       auto extension uses the function pointers recorded here, not its pApi argument
**       (NULL in a library built without load_extension).
*/
#include "txn.h"
#include "vfs.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

typedef long long i64;
typedef void tdb_ctx;
typedef void tdb_db;
typedef void tdb_value;
typedef void (*xfunc_fn)(tdb_ctx *, int, tdb_value **);

typedef int (*auto_ext_fn)(void (*)(void));
typedef int (*create_fn)(tdb_db *, const char *, int, int, void *, xfunc_fn, xfunc_fn,
                         void (*)(tdb_ctx *), void (*)(void *));
typedef int (*file_control_fn)(tdb_db *, const char *, int, void *);
typedef tdb_db *(*ctx_db_fn)(tdb_ctx *);
typedef void (*result_i64_fn)(tdb_ctx *, i64);
typedef void (*result_null_fn)(tdb_ctx *);

#define SQLITE_OK 0
#define SQLITE_UTF8 1
#define SQLITE_INNOCUOUS 0x000200000
#define SQLITE_FCNTL_FILE_POINTER 7

/* sqlite3_api_routines slots (append-only table; see vfs.c) */
#define API_FILE_CONTROL 127
#define API_RESULT_INT64 83
#define API_RESULT_NULL 84
#define API_CONTEXT_DB_HANDLE 149
#define API_CREATE_FUNCTION_V2 162
#define API_AUTO_EXTENSION 192

static struct {
    create_fn create;
    file_control_fn file_control;
    ctx_db_fn ctx_db;
    result_i64_fn result_i64;
    result_null_fn result_null;
} g;
static int g_ready;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;

/* ------------------------------------------------ (1) ids */

static uint64_t g_base, g_next;
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

/* ------------------------------------------------ (3) sqlite_tdb_txn() */

static void txn_func(tdb_ctx *ctx, int argc, tdb_value **argv) {
    (void)argc, (void)argv;
    void *file = NULL;
    if (g.file_control(g.ctx_db(ctx), "main", SQLITE_FCNTL_FILE_POINTER, &file) == SQLITE_OK && file) {
        uint64_t id = tdb_vfs_txn_mark(file);
        if (id) {
            g.result_i64(ctx, (i64)id);
            return;
        }
    }
    g.result_null(ctx);
}

static int txn_entry(tdb_db *db, char **err, const void *api) {
    (void)err, (void)api; /* (4) */
    return g.create(db, "sqlite_tdb_txn", 0, SQLITE_UTF8 | SQLITE_INNOCUOUS, NULL, txn_func, NULL, NULL, NULL);
}

static int setup(auto_ext_fn auto_ext) {
    int rc = TDB_TXN_OK;
    pthread_mutex_lock(&g_mu);
    if (!g_ready) {
        if (auto_ext((void (*)(void))txn_entry) == SQLITE_OK)
            g_ready = 1;
        else
            rc = TDB_TXN_FAILED;
    }
    pthread_mutex_unlock(&g_mu);
    return rc;
}

int tdb_txn_setup(void *auto_extension, void *create_function_v2, void *file_control,
                  void *context_db_handle, void *result_int64, void *result_null) {
    pthread_mutex_lock(&g_mu);
    if (!g_ready) {
        g.create = (create_fn)create_function_v2;
        g.file_control = (file_control_fn)file_control;
        g.ctx_db = (ctx_db_fn)context_db_handle;
        g.result_i64 = (result_i64_fn)result_int64;
        g.result_null = (result_null_fn)result_null;
    }
    pthread_mutex_unlock(&g_mu);
    return setup((auto_ext_fn)auto_extension);
}

int tdb_txn_setup_api(const void *pApi) {
    void *const *api = (void *const *)pApi;
    return tdb_txn_setup(api[API_AUTO_EXTENSION], api[API_CREATE_FUNCTION_V2], api[API_FILE_CONTROL],
                         api[API_CONTEXT_DB_HANDLE], api[API_RESULT_INT64], api[API_RESULT_NULL]);
}
