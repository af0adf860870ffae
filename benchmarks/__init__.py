"""Benchmarks: scripts that print figures (`make bench`); none is a test."""
