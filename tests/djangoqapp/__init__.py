"""Functions a django-q2 cluster on Sluice runs in the tests (async_task names them by dotted path)."""
