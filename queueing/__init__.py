"""Sluice's queue engine: topics, partitions, the log, producers and consumer groups."""
