"""engine.grammar on the bundled model's vocabulary: each kind accepts what it should, the known traps
(special tokens inside JSON strings, unbounded whitespace, raw control characters) are closed, bad specs
become InvalidRequest, and the processor masks logits, ends with the stop token and terminates."""

from __future__ import annotations

import json

import pytest
import torch
import xgrammar as xgr
from transformers import AutoTokenizer

from engine.errors import InvalidRequest
from engine.grammar import GrammarBackend
from engine.protocol import GuidedDecoding

OBJECT_WITH_STRING = {"type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"]}


@pytest.fixture(scope="module")
def backend(bundled_model_dir) -> GrammarBackend:
    return GrammarBackend(bundled_model_dir, vocab_size=49152)


@pytest.fixture(scope="module")
def special_ids(bundled_model_dir) -> list[int]:
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir)
    return sorted(i for i, t in tokenizer.added_tokens_decoder.items() if t.special)


def json_schema(schema) -> GuidedDecoding:
    return GuidedDecoding(kind="json_schema", spec=json.dumps(schema))


def accepts(backend: GrammarBackend, guided: GuidedDecoding, text: str) -> bool:
    matcher = xgr.GrammarMatcher(backend.compile(guided))
    return matcher.accept_string(text) and matcher.is_completed()


def allowed_after(backend: GrammarBackend, guided: GuidedDecoding, prefix: str) -> set[int]:
    matcher = xgr.GrammarMatcher(backend.compile(guided))
    assert matcher.accept_string(prefix)
    bitmask = xgr.allocate_token_bitmask(1, backend.vocab_size)
    matcher.fill_next_token_bitmask(bitmask)
    logits = torch.zeros(1, backend.vocab_size)
    xgr.apply_token_bitmask_inplace(logits, bitmask)
    return set(torch.isfinite(logits[0]).nonzero().flatten().tolist())


def test_special_tokens_never_appear_inside_json_strings(backend, special_ids, bundled_model_dir):
    guided = json_schema(OBJECT_WITH_STRING)
    allowed = allowed_after(backend, guided, '{"s": "ab')
    assert len(allowed) > 40_000  # ordinary text is allowed...
    assert not allowed & set(special_ids)  # ...but no <|im_start|>, <|im_end|>, <|endoftext|>, ...
    # The trap is real: xgrammar's stock vocabulary would allow them there.
    stock = xgr.TokenizerInfo.from_huggingface(AutoTokenizer.from_pretrained(bundled_model_dir), vocab_size=49152)
    matcher = xgr.GrammarMatcher(xgr.GrammarCompiler(stock).compile_json_schema(json.dumps(OBJECT_WITH_STRING)))
    assert matcher.accept_string('{"s": "ab') and matcher.accept_token(special_ids[1])


def test_only_the_stop_token_once_complete_then_terminated(backend):
    guided = json_schema(OBJECT_WITH_STRING)
    assert allowed_after(backend, guided, '{"s": "ab"}') == set(backend.tokenizer_info.stop_token_ids)
    processor = backend.create(guided)
    for token in _tokens(backend, '{"s": "ab"}'):
        logits = torch.zeros(backend.vocab_size)
        processor.apply(logits)
        assert torch.isfinite(logits[token])
        processor.accept(token)
    assert not processor.is_terminated()
    [stop] = backend.tokenizer_info.stop_token_ids
    processor.accept(stop)
    assert processor.is_terminated()


def test_a_token_outside_the_mask_is_refused(backend):
    processor = backend.create(json_schema(OBJECT_WITH_STRING))
    with pytest.raises(RuntimeError, match="violates"):
        processor.accept(_tokens(backend, "hello")[0])


@pytest.mark.parametrize(
    "text, ok",
    [
        ('{"a": 1, "b": [2, 3]}', True),
        ('{"a":1,"b":[2,3]}', False),
        ('{ "a": 1, "b": [2, 3]}', False),
        ('{"a": 1,\n"b": [2, 3]}', False),
        ('{"a": 1, "b": [2, 3], "c": 4}', False),  # undeclared property
        ('{"b": [2, 3]}', False),  # required "a" missing
    ],
)
def test_json_has_one_spacing_and_no_undeclared_properties(backend, text, ok):
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "array", "items": {"type": "integer"}}},
        "required": ["a"],
    }
    assert accepts(backend, json_schema(schema), text) is ok


@pytest.mark.parametrize("text", ['"a\tb"', '"a\x0fb"', '"a\nb"', '"a\x00"'])
@pytest.mark.parametrize("bounds", [{"maxLength": 5}, {"minLength": 1}, {}])
def test_strings_never_contain_raw_control_characters(backend, text, bounds):
    assert not accepts(backend, json_schema({"type": "string", **bounds}), text)
    assert accepts(backend, json_schema({"type": "string", **bounds}), '"ab"')


@pytest.mark.parametrize(
    "guided, good, bad",
    [
        (GuidedDecoding(kind="json_object"), '{"x": [1, {"y": null}]}', "[1]"),
        (GuidedDecoding(kind="regex", spec=r"\d{3}-[a-z]+"), "123-abc", "12-abc"),
        (GuidedDecoding(kind="grammar", spec='root ::= "yes" | "no"'), "no", "maybe"),
        (
            GuidedDecoding(
                kind="structural_tag",
                spec=json.dumps(
                    {
                        "type": "structural_tag",
                        "format": {
                            "type": "tag",
                            "begin": "<a>",
                            "content": {"type": "json_schema", "json_schema": OBJECT_WITH_STRING},
                            "end": "</a>",
                        },
                    }
                ),
            ),
            '<a>{"s": "x"}</a>',
            '<a>{"s":"x"}</a>',  # JSON inside tags gets the same fixed spacing
        ),
    ],
)
def test_each_kind_accepts_its_language(backend, guided, good, bad):
    assert accepts(backend, guided, good)
    assert not accepts(backend, guided, bad)


@pytest.mark.parametrize(
    "guided, param, message",
    [
        (GuidedDecoding(kind="json_schema", spec="{not json"), "response_format", "not valid JSON"),
        (json_schema({"type": "integer", "minimum": 1.5}), "response_format", "whole number"),
        (GuidedDecoding(kind="regex", spec="(("), "guided_regex", "parenthesis"),
        (GuidedDecoding(kind="grammar", spec="root ::= missing"), "guided_grammar", "not defined"),
        (GuidedDecoding(kind="structural_tag", spec='{"type": "structural_tag", "format": {"type": "nope"}}'), "tools", "nope"),
    ],
)
def test_bad_specs_are_invalid_requests(backend, guided, param, message):
    with pytest.raises(InvalidRequest, match=message) as info:
        backend.validate(guided)
    assert info.value.param == param
    assert "/project/" not in info.value.message  # no C++ source paths


def test_compiled_grammars_are_cached(backend):
    guided = json_schema({"type": "object", "properties": {"cached": {"type": "boolean"}}})
    assert backend.compile(guided) is backend.compile(GuidedDecoding(kind=guided.kind, spec=guided.spec))


def _tokens(backend: GrammarBackend, text: str) -> list[int]:
    vocab = {token: i for i, token in enumerate(backend.tokenizer_info.decoded_vocab)}
    return [vocab[ch.encode()] for ch in text]  # one byte-level token per ASCII character
