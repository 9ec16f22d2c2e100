"""Compatibility layers that let programs written for other queues run on Sluice: a kombu transport
(kombu_transport) and a result backend (celery_backend) for Celery, and room for the beat scheduler
and the django-q2 broker."""
