"""Celery workers for offline bulk jobs."""
