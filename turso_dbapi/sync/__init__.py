"""Turso sync replicas: open and bootstrap (``replica``, ``bootstrap``), metadata, and pull
(``engine`` sequences it: lock -> network -> ``stage`` -> ``apply`` + ``rebase``).

Two-way: ``capture`` logs every local change (triggers, same transaction), ``changes``
turns the log into idempotent SQL, ``push`` sends it over ``/v2/pipeline``, ``rebase``
replays the unpushed changes on top of each pulled revision; ``internal`` opens the
driver's own connections to a replica.
"""
