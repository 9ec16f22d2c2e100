"""An unchanged Celery app (Django's Celery layout) whose broker is Sluice: `broker_url = "sluice://"`."""
