"""Small helpers with no knowledge of databases: atomic file writes, file locks, progress."""
