"""Benchmarks: each runs the baseline and ours in one run and prints the ratio."""
