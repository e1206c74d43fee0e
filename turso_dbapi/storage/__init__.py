"""The replica on disk: its files, the page store, the VFS that serves SQLite from it, the
apply flag shared with other processes, and page checksums."""
