"""Study: errors (see docs/results/errors/ and this folder's scripts)."""
