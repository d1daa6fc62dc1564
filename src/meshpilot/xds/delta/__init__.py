"""Incremental (delta) xDS: DeltaAggregatedResources streams."""
