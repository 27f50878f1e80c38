"""Study: accuracy against training budget (issue 25, section 1)."""
