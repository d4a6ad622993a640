"""The one tool-call text format the prompt teaches, the grammar enforces and the parser reads.

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

It is the Hermes / Qwen2.5 format, so models trained on it (and templates that render it) need no
translation; several calls are separated by one newline.
"""

from __future__ import annotations

import json
from typing import Any

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
CALL_SEPARATOR = "\n"
CALL_TRAILER = "}\n" + CALL_CLOSE
RESPONSE_OPEN = "<tool_response>"
RESPONSE_CLOSE = "</tool_response>"


def call_header(name: str) -> str:
    """Everything before the arguments object; the grammar emits it verbatim once a call is chosen."""
    return f'{CALL_OPEN}\n{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": '


def render_call(name: str, arguments: Any) -> str:
    return call_header(name) + json.dumps(arguments, ensure_ascii=False) + CALL_TRAILER
