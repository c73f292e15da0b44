"""Benchmarks (`python -m bench`) and the reliability suite (`python -m bench.reliability`)."""
