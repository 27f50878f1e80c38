"""Study: robustness (see docs/results/robustness/ and this folder's scripts)."""
