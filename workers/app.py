"""The Celery app, and nothing else: `celery -A workers.app inspect active` (or Flower) works on it."""

from __future__ import annotations

from celery import Celery

from workers.config import WorkerSettings

settings = WorkerSettings.from_env()
app = Celery("flowgate", include=["workers.tasks"])
app.conf.update(settings.celery_config())
