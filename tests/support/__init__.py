"""Test-only ADS clients and simulated sidecars (used by tests and bench/, never shipped)."""
