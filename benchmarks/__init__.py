"""Benchmarks of usage_server: `python -m benchmarks --help`."""
