/*
** txn.h — ids of local write transactions, for change capture (spec: txn.c's header).
*/
#ifndef TDB_TXN_H
#define TDB_TXN_H
#include <stdint.h>
#include <stddef.h>

/* A fresh transaction id: nonzero, positive as a signed 64-bit integer (txn.c (1)). */
uint64_t tdb_txn_fresh(void);
/* Register sqlite_tdb_txn() on every connection through the api routines table of an
** extension entry point (route B). Idempotent. Returns 0 on success. */
int tdb_txn_setup_api(const void *api);

/* cdef-begin */
#define TDB_TXN_OK 0
#define TDB_TXN_FAILED 1 /* sqlite3_auto_extension refused */
/* Route A: the addresses of sqlite3_auto_extension, sqlite3_create_function_v2,
** sqlite3_file_control, sqlite3_context_db_handle, sqlite3_result_int64 and
** sqlite3_result_null of the library the stdlib uses (dlsym). Idempotent. */
int tdb_txn_setup(void *auto_extension, void *create_function_v2, void *file_control,
                  void *context_db_handle, void *result_int64, void *result_null);
/* cdef-end */

#endif
