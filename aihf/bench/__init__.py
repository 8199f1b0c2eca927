"""Benchmarks: every method on the same data, measured against an external gold reward."""
