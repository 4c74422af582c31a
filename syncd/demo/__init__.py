"""``syncd demo``: the daemon's story told against the built-in fakes."""
