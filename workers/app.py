"""The Celery app, and nothing else: `celery -A workers.app inspect active` (or Flower) works on it."""

from __future__ import annotations

from celery import Celery

from workers.config import WorkerSettings


def create_app(settings: WorkerSettings) -> Celery:
    celery = Celery("flowgate", include=["workers.tasks"], set_as_current=False)
    celery.conf.update(settings.celery_config())
    return celery


settings = WorkerSettings.from_env()
app = create_app(settings)
