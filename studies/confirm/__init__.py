"""Study: confirm (see docs/results/confirm/ and this folder's scripts)."""
