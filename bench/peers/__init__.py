"""The peers' no-op tasks and apps, each set up the way its documentation shows (bench/task_peers.py)."""
