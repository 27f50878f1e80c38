"""Study: recognition (see docs/results/recognition/ and this folder's scripts)."""
