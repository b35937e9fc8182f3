"""Synthetic, deterministic usage for demos, tests and benchmarks."""
