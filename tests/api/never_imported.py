"""A module the API must never import because a request named it (test_tasks checks it stays unloaded)."""
raise RuntimeError("tests.api.never_imported was imported")
