"""Study: ablation (see docs/results/ablation/ and this folder's scripts)."""
