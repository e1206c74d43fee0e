"""Turso sync replicas: open and bootstrap (``replica``, ``bootstrap``), metadata, and pull
(``engine`` sequences it: lock -> network -> ``stage`` -> ``apply``).

Push, capture of local changes and rebase belong here too (not implemented yet: ``pull()``
refuses replicas with local changes, ``push()`` raises NotSupportedError).
"""
