"""Tiny, seeded, locally built models (random weights) for tests, demos and benchmarks. No hub."""
