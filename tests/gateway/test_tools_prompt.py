"""render_prompt: the model's own template; a Hermes-style tools template gets tools natively (checked
against transformers), any other gets the documented fallback; odd client shapes are normalized."""

from __future__ import annotations

import json

import pytest
import transformers

from engine.errors import InvalidRequest
from engine.tokenizer import Tokenizer
from gateway.tools import render_prompt

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
# What real clients send: developer role, text parts, content [] or null next to tool_calls, arguments as
# JSON text carrying an undeclared key, tool results as JSON text, parallel calls answered in a row.
CONVERSATION = [
    {"role": "developer", "content": "Be brief."},
    {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
    {
        "role": "assistant",
        "content": [],
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris", "extra": 1}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
            {"id": "call_3", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_2", "content": "sunny"},
    {"role": "tool", "tool_call_id": "call_3", "content": "rain"},
]
FALLBACK_PROMPT = """<|im_start|>system
Be brief.

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
<|im_start|>user
Weather in Paris?<|im_end|>
<|im_start|>assistant
<tool_call>
{"name": "get_weather", "arguments": {"city": "Paris", "extra": 1}}
</tool_call><|im_end|>
<|im_start|>user
<tool_response>
{"temp": 21}
</tool_response><|im_end|>
<|im_start|>assistant
<tool_call>
{"name": "get_weather", "arguments": {"city": "Rome"}}
</tool_call>
<tool_call>
{"name": "get_weather", "arguments": {}}
</tool_call><|im_end|>
<|im_start|>user
<tool_response>
sunny
</tool_response>
<tool_response>
rain
</tool_response><|im_end|>
<|im_start|>assistant
"""


@pytest.fixture(scope="module")
def smollm(bundled_model_dir) -> Tokenizer:
    return Tokenizer.from_dir(bundled_model_dir)


def test_a_template_without_tools_gets_the_documented_fallback(smollm):
    assert not smollm.supports_tools
    assert render_prompt(smollm, CONVERSATION, TOOLS, "auto") == FALLBACK_PROMPT


def test_tool_choice_none_leaves_the_tools_out_but_keeps_the_history(smollm):
    prompt = render_prompt(smollm, CONVERSATION, TOOLS, "none")
    assert "# Tools" not in prompt
    assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWeather in Paris?")
    assert '{"name": "get_weather", "arguments": {"city": "Rome"}}' in prompt


def test_a_fallback_system_message_is_added_when_there_is_none(smollm):
    prompt = render_prompt(smollm, [{"role": "user", "content": "Hi"}], TOOLS, None)
    assert prompt.startswith("<|im_start|>system\n# Tools\n\n")
    assert render_prompt(smollm, [{"role": "user", "content": "Hi"}], None, None) == smollm.apply_chat_template(
        [{"role": "user", "content": "Hi"}]
    )


def test_a_hermes_template_renders_tools_itself_as_transformers_does(tiny_model_dir):
    model_dir = tiny_model_dir("qwen2")
    # The same conversation in the canonical shapes transformers documents: arguments as objects.
    canonical = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        *[
            {**m, "content": "", "tool_calls": [{**c, "function": {**c["function"], "arguments": json.loads(c["function"]["arguments"])}} for c in m["tool_calls"]]}
            if m["role"] == "assistant"
            else m
            for m in CONVERSATION[2:]
        ],
    ]
    expected = transformers.AutoTokenizer.from_pretrained(model_dir).apply_chat_template(
        canonical, tools=TOOLS, tokenize=False, add_generation_prompt=True
    )
    prompt = render_prompt(Tokenizer.from_dir(model_dir), CONVERSATION, TOOLS, "required")
    assert prompt == expected
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "extra": 1}}\n</tool_call>' in prompt


def test_a_tools_template_in_another_call_format_gets_the_fallback(tiny_model_dir):
    tokenizer = Tokenizer.from_dir(tiny_model_dir("llama"))
    assert tokenizer.supports_tools
    prompt = render_prompt(tokenizer, CONVERSATION[:2], TOOLS, "auto")
    assert "<tool_call>" in prompt and "Environment: ipython" not in prompt


@pytest.mark.parametrize(
    "message, param",
    [
        (
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]},
            "messages[1].tool_calls[0].function.arguments",
        ),
        ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}, "messages[1].content"),
    ],
)
def test_unusable_messages_are_invalid_requests(smollm, message, param):
    with pytest.raises(InvalidRequest) as info:
        render_prompt(smollm, [{"role": "user", "content": "Hi"}, message], TOOLS, "auto")
    assert info.value.param == param
