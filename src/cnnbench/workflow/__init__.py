"""Whole commands' work, end to end: a planned study trained through the store and reported.
The top stage: it may import every other; only the CLI imports it."""
