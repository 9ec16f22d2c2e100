"""The no-op tasks bench/tasks.py enqueues on Sluice (an app: SLUICE_EXTRA_APPS=bench.taskapp)."""
