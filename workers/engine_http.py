"""Lines run on the live engine through the gateway's OpenAI API, at the batch tier's priority.

A line's answer is final (an Outcome) or transient (the gateway is down, restarting or overloaded): transient
lines are retried later and never recorded, so a restart costs time, not lines.
"""

from __future__ import annotations

import secrets

import httpx
import msgspec

from workers.config import BATCH_PRIORITY, WorkerSettings
from workers.records import InputLine, LineError, LineResponse, Outcome

TRANSIENT_STATUS = frozenset({408, 409, 425, 429, 499, 500, 502, 503, 504})


class Transient(Exception):
    """The line could not run now; run it again later."""


def outcome_id() -> str:
    return "batch_req_" + secrets.token_hex(12)


def client(settings: WorkerSettings) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    return httpx.AsyncClient(
        base_url=settings.gateway_url, headers=headers, follow_redirects=False,
        timeout=httpx.Timeout(settings.request_timeout_s, connect=5.0),
    )


async def run_line(http: httpx.AsyncClient, endpoint: str, line: InputLine) -> Outcome:
    body = dict(line.body) | {"priority": BATCH_PRIORITY, "stream": False}
    try:
        response = await http.post(endpoint, content=msgspec.json.encode(body),
                                   headers={"Content-Type": "application/json"})
    except httpx.TransportError as exc:
        raise Transient(f"{type(exc).__name__}: {exc}") from exc
    if response.status_code in TRANSIENT_STATUS:
        raise Transient(f"HTTP {response.status_code}")
    request_id = response.headers.get("x-request-id") or "req_" + secrets.token_hex(12)
    try:
        payload = response.json()
    except ValueError:
        raise Transient(f"HTTP {response.status_code} without a JSON body") from None
    reply = LineResponse(status_code=response.status_code, request_id=request_id, body=payload)
    if response.status_code == 200:
        return Outcome(id=outcome_id(), custom_id=line.custom_id, response=reply, error=None)
    detail = payload.get("error") if isinstance(payload, dict) else None
    detail = detail if isinstance(detail, dict) else {}
    error = LineError(code=str(detail.get("code") or detail.get("type") or f"http_{response.status_code}"),
                      message=str(detail.get("message") or response.text[:500]))
    return Outcome(id=outcome_id(), custom_id=line.custom_id, response=reply, error=error)


def line_error(custom_id: str, code: str, message: str) -> Outcome:
    return Outcome(id=outcome_id(), custom_id=custom_id, response=None, error=LineError(code=code, message=message))
