"""One file per schema revision, applied in order (``down_revision`` chains them)."""
