"""The interactive shell (``python -m turso_dbapi``) and its table printer."""
