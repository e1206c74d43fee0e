"""Turso sync replicas: open and bootstrap, metadata, pull (stage, then apply)."""
