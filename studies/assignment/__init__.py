"""Study: assignment (see docs/results/assignment/ and this folder's scripts)."""
