"""Everything the bulk path is configured by, from FLOWGATE_* variables, in one frozen struct.

The gateway and every worker read the same variables, so a key prefix or queue name set for one process
(tests namespace everything with FLOWGATE_BULK_PREFIX) reaches the Celery app, the ledger and the file store alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

# Engine priority of the batch tier (gateway.auth.identity.TIER_PRIORITY["batch"]; workers never import the gateway).
BATCH_PRIORITY = 2


@dataclass(frozen=True)
class WorkerSettings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "flowgate:"  # every Redis key, Celery's included, starts with it
    queue: str = "flowgate.bulk"
    webhook_queue: str = "flowgate.webhooks"
    home: Path = field(default_factory=lambda: Path("~/.cache/flowgate").expanduser())  # files/ lives here
    gateway_url: str = "http://127.0.0.1:8000"  # where lines run: the live engine behind the gateway's API
    api_key: str | None = None  # an internal batch-tier key; never logged nor put in a task message
    chunk_size: int = 32
    line_concurrency: int = 8  # a chunk's lines in flight at once against the engine
    max_lines: int = 50_000
    max_bytes: int = 100 << 20
    max_queued_lines_per_key: int = 200_000
    default_completion_window_s: int = 24 * 3600
    visibility_timeout_s: int = 3600  # longer than the longest chunk: an unacked chunk is redelivered after it
    max_line_crashes: int = 3  # a line that took its worker down this often ends as an error (poison)
    stall_s: int = 3900  # an unfinished job without progress this long has its missing chunks republished
    request_timeout_s: float = 600.0
    webhook_secret: str | None = None  # Standard Webhooks "whsec_..." secret; a random one per home if unset
    webhook_allow_hosts: tuple[str, ...] = ()  # hosts or CIDRs exempt from the SSRF guard (tests, on-prem)
    webhook_allow_http: bool = False
    webhook_max_attempts: int = 8

    def __post_init__(self):
        if not self.prefix or not self.prefix.endswith(":"):
            raise ValueError("FLOWGATE_BULK_PREFIX must end with ':'")
        if self.chunk_size < 1 or self.line_concurrency < 1:
            raise ValueError("chunk size and line concurrency must be at least 1")

    @property
    def files_dir(self) -> Path:
        return self.home / "files"

    @classmethod
    def from_env(cls, **overrides) -> WorkerSettings:
        env = os.environ
        text = {
            "redis_url": "FLOWGATE_REDIS_URL",
            "prefix": "FLOWGATE_BULK_PREFIX",
            "queue": "FLOWGATE_BULK_QUEUE",
            "webhook_queue": "FLOWGATE_WEBHOOK_QUEUE",
            "gateway_url": "FLOWGATE_GATEWAY_URL",
            "api_key": "FLOWGATE_WORKER_API_KEY",
            "webhook_secret": "FLOWGATE_WEBHOOK_SECRET",
        }
        numbers = {
            "chunk_size": "FLOWGATE_BULK_CHUNK_SIZE",
            "line_concurrency": "FLOWGATE_BULK_LINE_CONCURRENCY",
            "max_lines": "FLOWGATE_BULK_MAX_LINES",
            "max_bytes": "FLOWGATE_BULK_MAX_BYTES",
            "max_queued_lines_per_key": "FLOWGATE_BULK_MAX_QUEUED_LINES",
            "visibility_timeout_s": "FLOWGATE_BULK_VISIBILITY_TIMEOUT",
            "max_line_crashes": "FLOWGATE_BULK_MAX_LINE_CRASHES",
            "stall_s": "FLOWGATE_BULK_STALL_S",
            "webhook_max_attempts": "FLOWGATE_WEBHOOK_MAX_ATTEMPTS",
        }
        values: dict = {name: env[var] for name, var in text.items() if env.get(var)}
        values |= {name: int(env[var]) for name, var in numbers.items() if env.get(var)}
        if env.get("FLOWGATE_BULK_DIR") or env.get("FLOWGATE_HOME"):
            values["home"] = Path(env.get("FLOWGATE_BULK_DIR") or env["FLOWGATE_HOME"]).expanduser()
        if env.get("FLOWGATE_WEBHOOK_ALLOW_HOSTS"):
            values["webhook_allow_hosts"] = tuple(h.strip() for h in env["FLOWGATE_WEBHOOK_ALLOW_HOSTS"].split(","))
        if env.get("FLOWGATE_WEBHOOK_ALLOW_HTTP"):
            values["webhook_allow_http"] = env["FLOWGATE_WEBHOOK_ALLOW_HTTP"].lower() in ("1", "true", "yes")
        return cls(**values | overrides)

    def celery_config(self) -> dict:
        """At-least-once delivery; the ledger (not Celery) makes each line's outcome happen once."""
        return {
            "broker_url": self.redis_url,
            "broker_transport_options": {
                "global_keyprefix": self.prefix + "celery:",
                "visibility_timeout": self.visibility_timeout_s,
            },
            "broker_connection_retry_on_startup": True,
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,  # a killed worker's chunk goes back to the queue
            "task_acks_on_failure_or_timeout": True,
            "worker_prefetch_multiplier": 1,
            "task_ignore_result": True,  # the truth is in the ledger, never in a result backend
            "task_default_queue": self.queue,
            "task_routes": {
                "workers.tasks.deliver_webhook": {"queue": self.webhook_queue},
                "workers.tasks.*": {"queue": self.queue},
            },
            "task_serializer": "json",
            "accept_content": ["json"],
            "worker_hijack_root_logger": False,
            "worker_cancel_long_running_tasks_on_connection_loss": False,
            "broker_connection_max_retries": None,
        }
