"""The gateway suite's live `flowgate serve` fixtures, for the examples' tests.

Imported rather than shared: a run of both suites starts one server per suite (a few seconds)."""

from tests.gateway.conftest import async_client, client, server  # noqa: F401
