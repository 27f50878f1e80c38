"""Study: deploy (see docs/results/deploy/ and this folder's scripts)."""
