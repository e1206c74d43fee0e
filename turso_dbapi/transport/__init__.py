"""HTTP: one client with one retry step, and the network counters of a source."""
