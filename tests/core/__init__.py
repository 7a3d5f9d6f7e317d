"""Tests of the pure-numpy packages: transforms and metrics."""
