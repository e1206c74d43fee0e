/*
** vfs.h — registration of the "turso_dbapi" SQLite VFS (spec: vfs.c's header comment).
*/
#ifndef TDB_VFS_H
#define TDB_VFS_H
#include <stdint.h>
#include <stddef.h>

/* (20) the id of the write transaction of this main file, on the first call of each
** transaction; 0 afterwards, before any, and for files that are not lazy. */
uint64_t tdb_vfs_txn_mark(void *file);

/* cdef-begin */
#define TDB_VFS_OK 0
#define TDB_VFS_NO_DEFAULT 1     /* sqlite3_vfs_find(NULL) returned NULL */
#define TDB_VFS_REGISTER_FAILED 2 /* sqlite3_vfs_register returned an error */
#define TDB_VFS_OTHER_INSTANCE 3  /* already registered into another SQLite library */
#define TDB_VFS_NAME_TAKEN 4      /* a different VFS is registered under our name */

/* Register into the SQLite whose sqlite3_vfs_find / sqlite3_vfs_register these are
** (route A: addresses found with dlsym). Idempotent. Returns a TDB_VFS_* code. */
int tdb_vfs_register(void *vfs_find, void *vfs_register);
/* 0 = not registered, 'A' = by tdb_vfs_register, 'B' = by sqlite3_tdbnative_init. */
int tdb_vfs_route(void);
const char *tdb_vfs_name(void);
/* (22) xSync calls of files passed through to the default VFS (journals, WALs, plain
** databases opened with this VFS), in this process: tests count a commit's flushes. */
uint64_t tdb_vfs_passthrough_syncs(void);
/* cdef-end */

#endif
