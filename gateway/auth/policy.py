"""Per-key request policies that change what a request means (as opposed to whether it may run)."""

from __future__ import annotations

from gateway.auth.keys import ToolChoiceDefault
from gateway.schemas.chat import ChatMessage
from gateway.schemas.tools import ChatTool, ToolChoice


def default_tool_choice(tool_choice: ToolChoice | None, tools: list[ChatTool] | None, messages: list[ChatMessage],
                        policy: ToolChoiceDefault) -> ToolChoice | None:
    """`required_first_turn`: with tools and no tool result yet, an absent or `auto` tool_choice means
    `required`. n8n's AI Agent never sends tool_choice, and small models otherwise answer in prose instead
    of calling the workflow's tools; once a tool result is in the conversation the model may answer."""
    if (policy == "required_first_turn" and tools and tool_choice in (None, "auto")
            and not any(m.role == "tool" for m in messages)):
        return "required"
    return tool_choice
