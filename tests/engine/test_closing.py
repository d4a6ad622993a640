"""Budget steering on the bundled vocabulary: the shortest completion is real and no longer than any other
(checked against a search over every allowed token), and a GrammarLogitsProcessor whose "model" always
prefers to keep going still completes the grammar within max_tokens."""

from __future__ import annotations

import json

import pytest
import torch
import xgrammar as xgr

from engine.closing import shortest_completion
from engine.errors import InvalidRequest
from engine.grammar import GrammarBackend
from engine.protocol import GuidedDecoding

TODO = {"type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": {
    "type": "object", "required": ["title"],
    "properties": {"title": {"type": "string"}, "priority": {"enum": ["low", "high"]}}}}}}
WEATHER = {"type": "object", "required": ["city"],
           "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}}}


def tools_grammar(choice: str = "required", parallel: bool = True) -> GuidedDecoding:
    tags = [{"type": "tag", "begin": f'<tool_call>\n{{"name": "{name}", "arguments": ',
             "content": {"type": "json_schema", "json_schema": schema}, "end": "}\n</tool_call>"}
            for name, schema in (("get_weather", WEATHER), ("add_todo_items", TODO))]
    calls = {"type": "tags_with_separator", "tags": tags, "separator": "\n", "at_least_one": True,
             "stop_after_first": not parallel}
    if choice == "auto":
        calls = {"type": "triggered_tags", "triggers": ["<tool_call>"], "tags": tags,
                 "stop_after_first": not parallel, "excludes": ["</tool_call>"]}
    return GuidedDecoding(kind="structural_tag", spec=json.dumps({"type": "structural_tag", "format": calls}))


@pytest.fixture(scope="module")
def backend(bundled_model_dir) -> GrammarBackend:
    return GrammarBackend(bundled_model_dir, vocab_size=49152)


def matcher_at(backend, guided, prefix: str) -> xgr.GrammarMatcher:
    matcher = xgr.GrammarMatcher(backend.compile(guided))
    assert matcher.accept_string(prefix), prefix
    return matcher


def follow(backend, matcher, limit=200) -> list[int]:
    path = []
    while (c := shortest_completion(matcher, backend.candidates, limit)).distance:
        assert len(c.first_tokens) >= 1
        token = min(c.first_tokens)
        assert matcher.accept_token(token)
        path.append(token)
        assert shortest_completion(matcher, backend.candidates, limit).distance == c.distance - 1
    return path


HEAD = '<tool_call>\n{"name": "add_todo_items", "arguments": '
PREFIXES = ["", "<tool_call>\n", HEAD, HEAD + '{"items": [', HEAD + '{"items": [{"title": "mi',
            HEAD + '{"items": [{"title": "milk"}, {"title": "eggs", "priority": "hi',
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par']


@pytest.mark.parametrize("prefix", PREFIXES)
def test_following_the_first_tokens_completes_in_exactly_the_distance(backend, prefix):
    guided = tools_grammar()
    matcher = matcher_at(backend, guided, prefix)
    distance = shortest_completion(matcher, backend.candidates, 200).distance
    path = follow(backend, matcher)
    assert len(path) == distance and matcher.is_completed()
    text = prefix + backend_decode(backend, path)
    body = text.split("<tool_call>\n", 1)[1].rsplit("\n</tool_call>", 1)[0]
    assert json.loads(body)["name"] in ("get_weather", "add_todo_items")


def backend_decode(backend, token_ids) -> str:
    vocab = backend.tokenizer_info.decoded_vocab
    return b"".join(vocab[t] if isinstance(vocab[t], bytes) else vocab[t].encode() for t in token_ids).decode()


@pytest.mark.parametrize(("schema", "prefix"), [
    (TODO, '{"items": [{"title": "milk"}'), (TODO, '{"items": [{"title": "milk"}]'), (TODO, '{"items": []'),
    (TODO, '{"items": [{"title": "mi'), (WEATHER, '{"city": "Paris"'), (WEATHER, '{"city": "Paris", "unit": "c')])
def test_no_path_over_all_allowed_tokens_is_shorter(backend, schema, prefix):
    """Breadth-first search over every allowed token, except that inside an (unbounded) string only tokens
    with a quote or a backslash are followed: any other keeps the state the same, one token deeper."""
    matcher = matcher_at(backend, GuidedDecoding(kind="json_schema", spec=json.dumps(schema)), prefix)
    distance = shortest_completion(matcher, backend.candidates, 50).distance
    assert 1 <= distance <= 4
    bitmask = xgr.allocate_token_bitmask(1, 49152)
    frontier = [matcher]
    for depth in range(1, distance):
        next_frontier = []
        for node in frontier:
            node.fill_next_token_bitmask(bitmask)
            allowed = torch.nonzero(bitmask_to_bool(bitmask)).flatten().tolist()
            if backend.candidates.string_probe in allowed:
                allowed = [t for t in allowed if set(backend.candidates.bytes_of[t]) & set(b'"\\')]
            for token in allowed:
                child = node.fork()
                assert child.accept_token(token)
                assert not child.is_completed(), f"a completion of {depth} < {distance} tokens exists"
                next_frontier.append(child)
        frontier = next_frontier


def bitmask_to_bool(bitmask) -> torch.Tensor:
    words = bitmask[0].to(torch.int64) & 0xFFFFFFFF
    bits = (words.unsqueeze(1) >> torch.arange(32)) & 1
    return bits.flatten()[:49152].bool()


def test_auto_free_text_is_complete_and_an_opened_call_is_not(backend):
    guided = tools_grammar("auto")
    assert shortest_completion(matcher_at(backend, guided, "Hello"), backend.candidates, 50).distance == 0
    assert shortest_completion(matcher_at(backend, guided, "Hi <tool_call>\n"), backend.candidates, 50).distance > 5


def test_max_tokens_below_the_shortest_call_is_a_400_naming_max_tokens(backend):
    guided = tools_grammar()
    shortest = backend.min_tokens(guided)
    assert 10 < shortest < 60
    backend.validate(guided, max_tokens=shortest)
    with pytest.raises(InvalidRequest) as info:
        backend.validate(guided, max_tokens=shortest - 1)
    assert info.value.param == "max_tokens" and str(shortest) in info.value.message
    assert backend.min_tokens(tools_grammar("auto")) == 0


def run_stubborn(processor, backend, max_tokens: int, favourite: str, opening: list[int], seed: int):
    """Generate greedily from logits that love `favourite`'s characters and never the stop token, after
    `opening` (forced); returns (text, whether the grammar completed)."""
    vocab = backend.candidates.bytes_of
    base = torch.randn(49152, generator=torch.Generator().manual_seed(seed))
    for t, v in enumerate(vocab):
        if v and set(v) <= set(favourite.encode()):
            base[t] += 20.0
    base[backend.tokenizer_info.stop_token_ids] = -50.0
    out = list(opening)
    for token in opening:
        processor.accept(token)
    while len(out) < max_tokens and not processor.is_terminated():
        logits = base.clone()
        processor.apply(logits)
        token = int(logits.argmax())
        processor.accept(token)
        out.append(token)
    stops = backend.tokenizer_info.stop_token_ids
    return backend_decode(backend, [t for t in out if t not in stops]), processor._matcher.is_completed()


@pytest.fixture(scope="module")
def tokenizer(bundled_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(bundled_model_dir)


@pytest.mark.parametrize("favourite", ['{"title":"ab},[', ', {"title": "x"}'])
@pytest.mark.parametrize("choice", ["required", "auto"])
def test_a_model_that_never_stops_still_completes_within_max_tokens(backend, tokenizer, favourite, choice):
    guided = tools_grammar(choice)
    # auto: the model has opened a call after some text; it must be closed too
    opening = tokenizer.encode("Sure. <tool_call>\n") if choice == "auto" else []
    shortest = backend.min_tokens(tools_grammar()) + len(opening)
    unsteered_completed = []
    for max_tokens in (shortest, shortest + 3, 100):
        unsteered = backend.create(guided)  # the control: without a budget to steer by it runs out
        unsteered_completed.append(run_stubborn(unsteered, backend, max_tokens, favourite, opening, max_tokens)[1])
        steered = backend.create(guided, max_tokens=max_tokens)
        text, completed = run_stubborn(steered, backend, max_tokens, favourite, opening, seed=max_tokens)
        assert completed, (max_tokens, text)
        assert text.rstrip().endswith("</tool_call>") if choice == "required" else "</tool_call>" in text, text
    assert not all(unsteered_completed)
