"""Helpers shared by the fast tests, the e2e tests and the benchmarks (not shipped in src/)."""
