"""Study: gpu_check (see docs/results/gpu_check/ and this folder's scripts)."""
