"""Real marrow (issue 24): what the real-cell marrow composites look like (gallery, page)."""
