"""The gateway's Prometheus metrics: names `flowgate_<what>_<unit>`, `_total` for counters, bounded labels.

Label bounds: `tier` is paid|free|batch, `route` a path template, `status` an HTTP status, `key_id` one of the
configured keys ("anonymous" in open mode). Everything is recorded in the gateway process from what the
engine ships (outputs with their events, stats), so the engine process needs no client library; the bulk
workers write theirs from their own processes (workers/telemetry.py), which is why PROMETHEUS_MULTIPROC_DIR
is honoured (see gateway/telemetry/exposition.py).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram, disable_created_metrics

# `_created` series double every counter and histogram, and no dashboard reads them.
disable_created_metrics()

# Latency buckets from 1 ms to 5 min: a CPU prefill of a long prompt takes seconds, a queue under load minutes.
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TOKEN_TIME_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5)

REQUESTS = Counter("flowgate_requests", "HTTP requests answered, by route template, status and tier",
                   ["route", "status", "tier"])
TIME_TO_FIRST_TOKEN = Histogram("flowgate_time_to_first_token_seconds",
                                "Engine receipt to first sampled token", ["tier"], buckets=LATENCY_BUCKETS)
TIME_PER_OUTPUT_TOKEN = Histogram("flowgate_time_per_output_token_seconds",
                                  "Mean time between output tokens after the first, per completion", ["tier"],
                                  buckets=TOKEN_TIME_BUCKETS)
E2E_LATENCY = Histogram("flowgate_e2e_request_latency_seconds", "Engine receipt to the request's last token",
                        ["tier"], buckets=LATENCY_BUCKETS)
QUEUE_TIME = Histogram("flowgate_queue_time_seconds", "Engine receipt to first scheduled (grammar compile included)",
                       ["tier"], buckets=LATENCY_BUCKETS)
GRAMMAR_COMPILE = Histogram("flowgate_grammar_compile_seconds", "Grammar compilation for guided requests "
                            "(microseconds when cached)", buckets=LATENCY_BUCKETS)
PROMPT_TOKENS = Counter("flowgate_prompt_tokens", "Prompt tokens processed", ["tier", "key_id"])
GENERATION_TOKENS = Counter("flowgate_generation_tokens", "Output tokens generated", ["tier", "key_id"])
CACHED_PROMPT_TOKENS = Counter("flowgate_cached_prompt_tokens", "Prompt tokens served from the prefix cache",
                               ["tier", "key_id"])
REQUEST_PREEMPTIONS = Counter("flowgate_request_preemptions", "Preemptions of finished requests' sequences",
                              ["tier"])
RATE_LIMIT_REFUSALS = Counter("flowgate_rate_limit_refusals", "Requests refused with 429 by a tier limit",
                              ["tier", "limit"])


def record_rate_limit_refusal(tier: str, limit: str) -> None:
    """Call once per 429 a tier limit answers. `limit` names which one, from a fixed set (e.g. "requests",
    "tokens", "concurrency"): never a key or a user-supplied value."""
    RATE_LIMIT_REFUSALS.labels(tier, limit).inc()
