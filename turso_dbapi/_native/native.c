/*
** native.c — the compiled core's version stamp.
**
** (1) tdb_native_version() returns TDB_NATIVE_VERSION from native.h; Python compares it
**     with NATIVE_VERSION at import, so a stale in-tree build fails loudly.
*/
#include "native.h"

int tdb_native_version(void) { return TDB_NATIVE_VERSION; } /* (1) */
