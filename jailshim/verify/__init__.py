"""Verification from inside the jail, as the daemon's user: entropy, RNG, OpenSSL, network."""
