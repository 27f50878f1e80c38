"""Developer scripts (not part of the package)."""
