"""The miss path: what to fetch when SQLite reads an absent page (read-ahead, B-tree
prefetch, single-flight)."""
