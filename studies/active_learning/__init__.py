"""Study: active_learning (see docs/results/active_learning/ and this folder's scripts)."""
