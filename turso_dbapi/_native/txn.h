/*
** txn.h — ids of local write transactions, for change capture (spec: txn.c's header).
*/
#ifndef TDB_TXN_H
#define TDB_TXN_H
#include <stdint.h>
#include <stddef.h>

/* A fresh transaction id: nonzero, positive as a signed 64-bit integer (txn.c (1)). */
uint64_t tdb_txn_fresh(void);
/* Register the sqlite_tdb_txn table on every connection through the api routines table of an
** extension entry point (route B). Idempotent. Returns 0 on success. */
int tdb_txn_setup_api(const void *api);

/* cdef-begin */
#define TDB_TXN_OK 0
#define TDB_TXN_FAILED 1 /* sqlite3_auto_extension refused */
#define TDB_TXN_NFUNCS 7
/* Route A: the addresses of sqlite3_auto_extension, sqlite3_create_module,
** sqlite3_declare_vtab, sqlite3_vtab_config, sqlite3_file_control, sqlite3_result_int64
** and sqlite3_result_null (in that order) of the library the stdlib uses (dlsym).
** Idempotent. */
int tdb_txn_setup(void *const *fns, int n);
/* cdef-end */

#endif
