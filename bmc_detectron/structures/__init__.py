"""Shared primitives on the lowest floor: box geometry and matching (numpy), the differential
count."""
