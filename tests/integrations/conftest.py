"""The gateway suite's live `flowgate serve` fixtures for the examples' tests, and the e2e summary.

The fixtures are imported rather than shared: a run of both suites starts one server per suite (seconds)."""

from __future__ import annotations

import os

import pytest

from tests.gateway.conftest import async_client, client, http, server  # noqa: F401


def pytest_configure(config):
    config.addinivalue_line("markers", "template(name): the n8n template an e2e test runs")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """With FLOWGATE_E2E_SUMMARY set (integrations/n8n/e2e/run.sh), one line per template test:
    template, pass/fail/skip, seconds."""
    report = yield
    path = os.environ.get("FLOWGATE_E2E_SUMMARY")
    marker = item.get_closest_marker("template")
    if path and marker and (report.when == "call" or report.outcome != "passed"):
        outcome = {"passed": "pass", "failed": "FAIL", "skipped": "skip"}[report.outcome]
        note = f"  ({report.longrepr[2]})" if report.skipped and isinstance(report.longrepr, tuple) else ""
        with open(path, "a") as f:
            f.write(f"{marker.args[0]:<40} {outcome:<8} {report.duration:.0f}{note}\n")
    return report
