"""Study: selection (see docs/results/selection/ and this folder's scripts)."""
