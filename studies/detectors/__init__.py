"""Study: detectors (see docs/results/detectors/ and this folder's scripts)."""
