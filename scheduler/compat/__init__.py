"""Compatibility layers that let programs written for other queues run on Sluice: a kombu transport
for Celery (kombu_transport), and room for the result backend, beat scheduler and django-q2 broker."""
