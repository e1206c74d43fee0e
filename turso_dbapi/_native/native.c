#include "native.h"

int tdb_native_version(void) { return TDB_NATIVE_VERSION; }
