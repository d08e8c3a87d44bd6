"""Datasets as verified arrays (sources, checksums, cache), the held-out split, and the tensors
training reads."""
