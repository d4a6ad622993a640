"""Repeat guards under a JSON grammar (engine.repeats): the scanner follows the structure the way JSON
does, and a scripted "model" that loves one value copies it without the guard and moves on with it; a call
that repeats an earlier one ends the output where the grammar may end."""

from __future__ import annotations

import json

import pytest
import torch

from engine.grammar import GrammarBackend
from engine.protocol import GuidedDecoding
from engine.repeats import JsonScanner
from tests.engine.test_closing import tools_grammar

LIST = {"type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": {"type": "string"}}}}


def scanned(text: str) -> JsonScanner:
    scanner = JsonScanner()
    scanner.feed(text.encode())
    return scanner


@pytest.mark.parametrize(("text", "rests"), [
    ('{"items": ["apple", "ap', ['ple"']),
    ('{"items": ["apple", ', ['"apple"']),
    ('{"items": ["apple", "milk", "', ['apple"', 'milk"']),
    ('{"items": ["apple", "b', []),
    ('{"items": [{"a": [1, 2]}, {"a": [', ['1, 2]}']),  # the outer array's element, copied so far
    ('{"items": [{"a": [1, 2]}, {"a": [3, ', ['3']),  # inside the inner array: its own elements
    ('{"items": ["a]\\"[", "a]', ['\\"["']),  # brackets and escaped quotes inside strings are text
    ('{"a": "[x", "b": "', []),  # no array open
])
def test_copied_rests_follow_every_open_array(text, rests):
    assert scanned(text).copied_rests() == [r.encode() for r in rests]


def test_a_top_level_value_repeated_across_markup_is_seen():
    call = '<tool_call>\n{"name": "f", "arguments": {"a": [1, "}"]}}\n</tool_call>'
    assert not scanned(call + "\n" + call.replace('"}"', '"]"')).repeated_top_value
    assert scanned(call + "\n" + call).repeated_top_value


@pytest.fixture(scope="module")
def backend(bundled_model_dir) -> GrammarBackend:
    return GrammarBackend(bundled_model_dir, vocab_size=49152)


@pytest.fixture(scope="module")
def tokenizer(bundled_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(bundled_model_dir)


def generate(backend, tokenizer, guided: GuidedDecoding, prefer, max_tokens: int) -> str:
    """Greedy decoding from scripted logits: prefer(previous token) -> {token text: bonus}."""
    processor = backend.create(guided, max_tokens=max_tokens)
    out: list[int] = []
    while len(out) < max_tokens and not processor.is_terminated():
        logits = torch.zeros(49152)
        logits[backend.tokenizer_info.stop_token_ids] = -50.0
        for text, bonus in prefer(tokenizer.decode(out[-1:])).items():
            (token,) = tokenizer.encode(text)
            logits[token] += bonus
        processor.apply(logits)
        token = int(logits.argmax())
        processor.accept(token)
        out.append(token)
    return tokenizer.decode([t for t in out if t not in backend.tokenizer_info.stop_token_ids])


def loves_apple(previous: str) -> dict[str, float]:
    if previous in ("apple", "milk"):
        return {'",': 5.0, '"': 4.0}
    return {"apple": 3.0, "milk": 2.0}


@pytest.mark.parametrize(("penalty", "second"), [(0.0, "apple"), (4.0, "milk")])
def test_the_sibling_penalty_moves_a_loop_to_the_next_best_value(backend, tokenizer, penalty, second):
    guided = GuidedDecoding(kind="json_schema", spec=json.dumps(LIST), repeat_penalty=penalty)
    items = json.loads(generate(backend, tokenizer, guided, loves_apple, 40))["items"]
    assert items[:2] == ["apple", second]
    if not penalty:
        assert set(items) == {"apple"} and len(items) > 4


def repeats_one_call(previous: str) -> dict[str, float]:
    return {"<": 3.0, "\n": 2.0, "Paris": 2.0}  # markup, separators and the same call, again and again


@pytest.mark.parametrize("end_on_repeat", [False, True])
def test_a_repeated_call_ends_the_output(backend, tokenizer, end_on_repeat):
    guided = GuidedDecoding(kind="structural_tag", spec=tools_grammar().spec, end_on_repeat=end_on_repeat)
    text = generate(backend, tokenizer, guided, repeats_one_call, 200)
    calls = [json.loads(part.split("\n</tool_call>")[0]) for part in text.split("<tool_call>\n")[1:]]
    assert calls[0]["name"] in ("get_weather", "add_todo_items") and calls[1] == calls[0]
    assert len(calls) == 2 if end_on_repeat else len(calls) > 2  # without: until the budget closes the last
