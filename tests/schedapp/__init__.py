"""A test app with periodic schedules: its tasks.py declares one with @periodic (synced by a
scheduler started with SLUICE_EXTRA_APPS=tests.schedapp)."""
