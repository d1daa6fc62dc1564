"""Helpers shared by the fast tests, the e2e tests and the benchmarks (not shipped in src/):
simulated sidecars and ADS clients, the synthetic mesh generator, waits with deadlines."""
