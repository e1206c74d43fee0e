/*
** native.h — version stamp of the compiled core.
**
** Python checks tdb_native_version() at import against NATIVE_VERSION in
** turso_dbapi/_native/__init__.py, so a stale build left in the tree (say, from an
** editable install before a C change) fails loudly instead of misbehaving.
*/
#ifndef TDB_NATIVE_H
#define TDB_NATIVE_H
#include <stdint.h>
#include <stddef.h>

#define TDB_NATIVE_VERSION 12

/* cdef-begin */
int tdb_native_version(void);
/* cdef-end */

#endif
