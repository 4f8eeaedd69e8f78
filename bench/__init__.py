"""Benchmarks of the candlestack pipeline: ``python -m bench`` (see bench/README.md)."""
