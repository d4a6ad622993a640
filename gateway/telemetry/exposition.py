"""GET /metrics: the process's metrics (or every process's, under PROMETHEUS_MULTIPROC_DIR) plus the engine's
live state, asked of the engine at scrape time."""

from __future__ import annotations

import asyncio
import os

from litestar import Response, get
from litestar.di import NamedDependency
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from engine.client import AsyncEngine
from engine.protocol import EngineStats

STATS_TIMEOUT_S = 5.0  # a scrape must not hang on a busy engine: its gauges are left out instead


class EngineStatsCollector:
    """The engine's last stats as gauges (and its cumulative preemptions as a counter)."""

    def __init__(self):
        self.stats: EngineStats | None = None

    def collect(self):
        up = GaugeMetricFamily("flowgate_engine_up", "1 when the engine answered this scrape's stats query")
        up.add_metric([], 0 if self.stats is None else 1)
        yield up
        s = self.stats
        if s is None:
            return
        yield GaugeMetricFamily("flowgate_seqs_running", "Sequences in the running batch", value=s.num_running)
        yield GaugeMetricFamily("flowgate_seqs_waiting", "Sequences waiting to be scheduled", value=s.num_waiting)
        blocks = GaugeMetricFamily("flowgate_kv_cache_blocks", "KV cache blocks by state (used + cached + free "
                                   "= capacity)", labels=["state"])
        for state, value in (("used", s.kv_blocks_used), ("cached", s.kv_blocks_cached),
                             ("free", s.kv_blocks_free)):
            blocks.add_metric([state], value)
        yield blocks
        yield GaugeMetricFamily("flowgate_kv_cache_capacity_blocks", "KV cache blocks in all",
                                value=s.kv_blocks_total)
        yield GaugeMetricFamily("flowgate_prefix_cache_hit_ratio", "Prompt tokens served from the prefix cache "
                                "over prompt tokens looked up", value=s.prefix_hit_rate)
        yield CounterMetricFamily("flowgate_preemptions", "Sequences preempted by the scheduler",
                                  value=s.num_preemptions)
        yield CounterMetricFamily("flowgate_interrupted_steps", "Engine steps abandoned for a request that "
                                  "outranked everything in them", value=s.num_interrupted_steps)
        yield GaugeMetricFamily("flowgate_prompt_throughput_tokens_per_second", "Recent prefill throughput",
                                value=s.prompt_tokens_per_s)
        yield GaugeMetricFamily("flowgate_generation_throughput_tokens_per_second", "Recent decode throughput",
                                value=s.generation_tokens_per_s)


def process_registry() -> CollectorRegistry:
    """Every process's metrics when they write to PROMETHEUS_MULTIPROC_DIR (gateway workers, Celery workers),
    else this process's."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry


def metrics_route(engine_collector: EngineStatsCollector):
    engine_registry = CollectorRegistry(auto_describe=False)
    engine_registry.register(engine_collector)

    @get("/metrics", tags=("health",), summary="Prometheus metrics (text exposition format)", include_in_schema=True)
    async def metrics(engine: NamedDependency[AsyncEngine]) -> Response:
        try:
            engine_collector.stats = await asyncio.wait_for(engine.stats(), STATS_TIMEOUT_S)
        except Exception:  # dead or too busy: flowgate_engine_up says so
            engine_collector.stats = None
        body = generate_latest(process_registry()) + generate_latest(engine_registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return metrics
