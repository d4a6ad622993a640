"""Our torch-free Tokenizer against transformers' AutoTokenizer on the same directory: the bundled model
(ChatML template), a tiny Llama-3-style one and a tiny Qwen-style one (both tools-aware)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import jinja2
import pytest
import transformers

from engine.tokenizer import Tokenizer

TEXTS = [
    "Hello world!",
    "In 2024,  2 apples cost $3.50 (or 350 cents).",
    "  leading and trailing spaces  ",
    "tabs\tand\nnew lines\n\n\nend",
    "unicode: héllo wörld, 你好, emoji 🚀",
    "<|im_start|>user\nhi<|im_end|> and <|eot_id|><|begin_of_text|> inline",
    "",
]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
        },
    },
}
CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <b>there</b> & 'you'"}],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke."},
    ],
]
TOOL_CONVERSATION = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,  # as OpenAI clients send it: must be dropped, not rendered as "None"
        "tool_calls": [
            {
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "°C"}},
            }
        ],
    },
    {"role": "tool", "content": '{"temperature": 21}'},
]


@pytest.fixture(scope="module", params=["bundled", "llama", "qwen2"])
def tokenizers(request, tiny_model_dir) -> tuple[Tokenizer, transformers.PreTrainedTokenizerBase]:
    if request.param == "bundled":
        path = request.getfixturevalue("bundled_model_dir")
    else:
        path = tiny_model_dir(request.param)
    return Tokenizer.from_dir(path), transformers.AutoTokenizer.from_pretrained(path)


def test_encode_decode_match_transformers(tokenizers):
    ours, theirs = tokenizers
    for text in TEXTS:
        for add_special_tokens in (False, True):
            ids = ours.encode(text, add_special_tokens=add_special_tokens)
            assert ids == theirs.encode(text, add_special_tokens=add_special_tokens), text
        ids = ours.encode(text)
        assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)
    assert ours.vocab_size == len(theirs)


def test_special_token_ids(tokenizers):
    ours, theirs = tokenizers
    assert ours.bos_token_id == theirs.bos_token_id
    assert theirs.eos_token_id in ours.eos_token_ids
    assert set(theirs.all_special_ids) <= set(ours.all_special_ids)
    assert ours.decode(ours.all_special_ids, skip_special_tokens=True) == ""


def test_eos_token_ids_come_from_generation_config(bundled_model_dir, tiny_model_dir):
    assert Tokenizer.from_dir(bundled_model_dir).eos_token_ids == [2]
    llama = Tokenizer.from_dir(tiny_model_dir("llama"))
    eos = ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"]
    assert llama.eos_token_ids == [llama.encode(t)[0] for t in eos]
    qwen = Tokenizer.from_dir(tiny_model_dir("qwen2"))
    assert qwen.eos_token_ids == [qwen.encode("<|im_end|>")[0], qwen.encode("<|endoftext|>")[0]]


def test_chat_template_matches_transformers(tokenizers):
    ours, theirs = tokenizers
    for messages in CONVERSATIONS:
        for add_generation_prompt in (True, False):
            want = theirs.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )
            assert ours.apply_chat_template(messages, add_generation_prompt=add_generation_prompt) == want


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tools_template_matches_transformers(tiny_model_dir, arch):
    path = tiny_model_dir(arch)
    ours, theirs = Tokenizer.from_dir(path), transformers.AutoTokenizer.from_pretrained(path)
    assert ours.supports_tools
    tools = [WEATHER_TOOL]
    for messages in (TOOL_CONVERSATION[:1], TOOL_CONVERSATION):
        want = theirs.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
        got = ours.apply_chat_template(messages, tools=tools)
        assert got == want
        assert '"get_weather"' in got and "None" not in got


def test_template_kwargs_and_exceptions(tiny_model_dir):
    path = tiny_model_dir("llama")
    ours, theirs = Tokenizer.from_dir(path), transformers.AutoTokenizer.from_pretrained(path)
    messages = CONVERSATIONS[0]
    got = ours.apply_chat_template(messages, date_string="01 Jan 2030")
    assert "Today Date: 01 Jan 2030" in got
    assert got == theirs.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, date_string="01 Jan 2030"
    )
    two_calls = [
        *TOOL_CONVERSATION[:1],
        TOOL_CONVERSATION[1] | {"tool_calls": TOOL_CONVERSATION[1]["tool_calls"] * 2},
    ]
    with pytest.raises(jinja2.TemplateError, match="single tool-calls"):
        ours.apply_chat_template(two_calls, tools=[WEATHER_TOOL])


# Indented block tags without "-" (trim_blocks / lstrip_blocks matter), namespace(), {% continue %} and
# {% generation %}, as some Hub templates use them.
FILE_TEMPLATE = """{% set ns = namespace(turns=0) %}
{% for m in messages %}
    {% if m.role == 'system' %}
        {% continue %}
    {% endif %}
    {% set ns.turns = ns.turns + 1 %}
    {% if m.role == 'assistant' %}
<{{ m.role }}>{% generation %}{{ m.content }}{% endgeneration %}
    {% else %}
<{{ m.role }}>{{ m.content }}
    {% endif %}
{% endfor %}
turns: {{ ns.turns }}
"""


def test_chat_template_file_wins_over_tokenizer_config(tiny_model_dir, tmp_path):
    path = shutil.copytree(tiny_model_dir("qwen2"), tmp_path / "model")
    (path / "chat_template.jinja").write_text(FILE_TEMPLATE)
    ours, theirs = Tokenizer.from_dir(path), transformers.AutoTokenizer.from_pretrained(path)
    messages = [{"role": "system", "content": "S"}, *CONVERSATIONS[2]]
    got = ours.apply_chat_template(messages)
    assert got == theirs.apply_chat_template(messages, tokenize=False)
    assert got == "<user>Hi\n<assistant>Hello! How can I help?<user>Tell me a joke.\nturns: 3"
    assert not ours.supports_tools


def test_bundled_tokenizer_splits_digits_like_llama_cpp(bundled_model_dir):
    # The GGUF's "smollm" pre-tokenizer isolates every digit before the GPT-2 split (as SmolLM's own tokenizer).
    tokenizer = Tokenizer.from_dir(bundled_model_dir)
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode(" 2024")) == ["Ġ", "2", "0", "2", "4"]


def test_import_is_torch_and_transformers_free():
    code = "import sys, engine.tokenizer; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
