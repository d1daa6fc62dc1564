"""The state-of-the-world ADS protocol: per-type state, subscriptions by name list, responses."""
