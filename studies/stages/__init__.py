"""Study: stages (see docs/results/stages/ and this folder's scripts)."""
