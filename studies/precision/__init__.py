"""Study: precision (see docs/results/precision/ and this folder's scripts)."""
