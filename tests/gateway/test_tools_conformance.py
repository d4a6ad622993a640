"""Tool calls always validate against their function's schema.

Two sources of calls, both parsed with gateway.tools.parse_tool_calls and checked with jsonschema:
- random walks: tokens drawn at random from what the grammar allows (no model), over schemas that use
  every keyword strict mode accepts, so each accepted keyword is shown to be enforced;
- the bundled model through LLMEngine, over seeded random schemas (nested objects, arrays, enums,
  bounded numbers and integers, optional fields) with tool_choice required / named / auto and
  parallel_tool_calls on and off. The validity rate is printed and must be 100%.
"""

from __future__ import annotations

import json
import random

import jsonschema
import pytest
import torch

from engine.config import EngineConfig
from engine.grammar import GrammarBackend
from engine.llm_engine import LLMEngine
from engine.protocol import GuidedDecoding, SamplingParams
from engine.tokenizer import Tokenizer
from gateway.tools import build_guided, parse_tool_calls, render_prompt
from gateway.tools.validation import ENFORCED_FORMATS, ENFORCED_KEYWORDS, validate_tools

VOCAB_SIZE = 49152
WALKS_PER_SCHEMA = 16
WALK_NOISE_ROWS = 512
INT = {"type": "integer"}
# Each accepted keyword in at least one schema; the walks show the grammar enforces it.
KEYWORD_SCHEMAS = [
    {"type": "object", "properties": {"n": {"type": "integer", "minimum": -20, "maximum": 300}}, "required": ["n"]},
    {"type": "object", "properties": {"n": {"type": "integer", "exclusiveMinimum": -3, "exclusiveMaximum": 7}}},
    {"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 7}}, "required": ["n"]},
    {"type": "object", "properties": {"x": {"type": "number", "minimum": -1.5, "exclusiveMaximum": 2.25}}, "required": ["x"]},
    {"type": "object", "properties": {"x": {"type": "number", "exclusiveMinimum": 0.5, "maximum": 3}}, "required": ["x"]},
    {"type": "object", "properties": {"s": {"type": "string", "minLength": 2, "maxLength": 5}}, "required": ["s"]},
    {"type": "object", "properties": {"s": {"type": "string", "pattern": "^[a-c]{2,4}-[0-9]+$"}}, "required": ["s"]},
    {"type": "object", "properties": {"e": {"enum": ['a"b', 1, 2.5, None, True, {"k": [1]}, "é"]}}, "required": ["e"]},
    {"type": "object", "properties": {"c": {"const": {"a": [1, "x"]}}}, "required": ["c"]},
    {"type": "object", "properties": {"l": {"type": "array", "items": INT, "minItems": 1, "maxItems": 3}}, "required": ["l"]},
    {"type": "object", "properties": {"t": {"type": "array", "prefixItems": [{"type": "string", "maxLength": 2}, {"type": "boolean"}], "items": False}}, "required": ["t"]},
    {"type": "object", "properties": {"a": INT}, "additionalProperties": {"type": "boolean"}, "required": ["a"]},
    {"type": "object", "properties": {"a": INT}, "additionalProperties": False},
    {"type": "object", "properties": {"u": {"anyOf": [{"type": "integer", "maximum": 3}, {"type": "string", "maxLength": 2}, {"type": "null"}]}}, "required": ["u"]},
    {"type": "object", "properties": {"v": {"type": ["boolean", "null", "integer"]}}, "required": ["v"]},
    {"type": "object", "properties": {"s": {"type": ["string", "null"], "maxLength": 3}, "n": {"type": ["integer", "null"], "minimum": 2}}, "required": ["s", "n"]},
    {
        "$defs": {"pt": {"type": "object", "properties": {"x": {"type": "number"}, "y": INT}, "required": ["x", "y"]}},
        "definitions": {"tag": {"type": "string", "maxLength": 3}},
        "type": "object",
        "properties": {"p": {"$ref": "#/$defs/pt"}, "q": {"type": "array", "items": {"$ref": "#/definitions/tag"}, "maxItems": 2}},
        "required": ["p"],
    },
    {"type": "object", "properties": {f: {"type": "string", "format": f} for f in sorted(ENFORCED_FORMATS)}},
]


@pytest.fixture(scope="module")
def backend(bundled_model_dir) -> GrammarBackend:
    return GrammarBackend(bundled_model_dir, VOCAB_SIZE)


@pytest.fixture(scope="module")
def tokenizer(bundled_model_dir) -> Tokenizer:
    return Tokenizer.from_dir(bundled_model_dir)


def test_the_walk_schemas_cover_every_accepted_keyword():
    used = set()
    for schema in KEYWORD_SCHEMAS:
        used |= _keywords(schema)
    assert used >= ENFORCED_KEYWORDS


@pytest.mark.parametrize("schema", KEYWORD_SCHEMAS, ids=lambda s: ",".join(sorted(_keywords(s) - {"type", "properties"})))
def test_random_walks_produce_only_valid_calls(backend, tokenizer, walk_logits, schema):
    tools = [{"type": "function", "function": {"name": "f", "parameters": schema, "strict": True}}]
    validate_tools(tools, "required", True)
    guided = build_guided(tools, "required", True, None)
    rng, completed = random.Random(0), 0
    for _ in range(WALKS_PER_SCHEMA):
        text = _random_walk(backend, guided, rng, walk_logits, tokenizer)
        if text is None:
            continue
        completed += 1
        content, calls = parse_tool_calls(text)
        assert content is None and calls, text
        for call in calls:
            jsonschema.validate(json.loads(call.function.arguments), schema)
    assert completed >= WALKS_PER_SCHEMA // 2


@pytest.fixture(scope="module")
def engine(bundled_model_dir) -> LLMEngine:
    return LLMEngine(EngineConfig(model=str(bundled_model_dir), kv_cache_bytes=128 << 20, max_model_len=2048))


MODEL_CASES = [("required", True), ("required", False), ("named", True), ("named", False)] * 2 + [("auto", True), ("auto", False)]


def test_model_tool_calls_validate_against_random_schemas(engine):
    rng = random.Random(1234)
    cases = [_random_case(rng, i, choice, parallel) for i, (choice, parallel) in enumerate(MODEL_CASES)]
    messages = [{"role": "user", "content": "Please use the tools to help me plan my trip to Paris."}]
    prompts = [render_prompt(engine.tokenizer, messages, tools, choice) for tools, choice, _ in cases]
    params = [
        SamplingParams(temperature=1.0, seed=i, max_tokens=64, guided=build_guided(tools, choice, parallel, None))
        for i, (tools, choice, parallel) in enumerate(cases)
    ]
    outputs = engine.generate(prompts, params)

    num_calls = num_valid = num_forced_complete = 0
    for (tools, choice, parallel), output in zip(cases, outputs, strict=True):
        [completion] = output.outputs
        content, calls = parse_tool_calls(completion.text)
        schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
        num_calls += len(calls)
        num_valid += sum(c.function.name in schemas and _is_valid(c, schemas[c.function.name]) for c in calls)
        if not parallel:
            assert len(calls) <= 1
        if choice != "auto":
            assert content is None, completion.text
            num_forced_complete += bool(calls)
            assert calls or completion.finish_reason == "length", completion.text
        if isinstance(choice, dict):
            assert {c.function.name for c in calls} <= {choice["function"]["name"]}
    print(f"\ntool-call validity: {num_valid}/{num_calls} = {num_valid / max(num_calls, 1):.1%}")
    assert num_valid == num_calls >= 6
    assert num_forced_complete >= 6  # most forced runs finish their call within max_tokens


def test_model_answers_in_the_requested_json(engine):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}, "population": {"type": "integer", "minimum": 0, "maximum": 10**9}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    formats = [{"type": "json_object"}, {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}}]
    messages = [{"role": "user", "content": "Give me the largest city of France and its population as JSON."}]
    prompt = render_prompt(engine.tokenizer, messages, None, None)
    params = [SamplingParams(temperature=0.0, max_tokens=48, guided=build_guided(None, None, None, f)) for f in formats]
    for output, expected in zip(engine.generate([prompt, prompt], params), [{"type": "object"}, schema], strict=True):
        [completion] = output.outputs
        assert completion.finish_reason == "stop", completion.text
        jsonschema.validate(json.loads(completion.text), expected)


def _random_case(rng: random.Random, i: int, choice: str, parallel: bool):
    tools = [_random_tool(rng, f"fn_{i}_{j}") for j in range(rng.randint(1, 2))]
    if choice == "named":
        choice = {"type": "function", "function": {"name": rng.choice(tools)["function"]["name"]}}
    validate_tools(tools, choice, parallel)
    return tools, choice, parallel


def _random_tool(rng: random.Random, name: str) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": "Plan a part of the trip",
            "parameters": _random_object(rng, 0),
            "strict": True,
        },
    }


_WORDS = ["city", "date", "guests", "budget", "notes", "tags", "rooms", "price", "rating", "options", "stops"]


def _random_object(rng: random.Random, depth: int) -> dict:
    names = rng.sample(_WORDS, rng.randint(1, 3 if depth else 4))
    properties = {name: _random_value(rng, depth + 1) for name in names}
    required = [n for n in names if rng.random() < 0.6]
    schema = {"type": "object", "properties": properties, "required": required}
    if rng.random() < 0.3:
        schema["additionalProperties"] = False
    return schema


def _random_value(rng: random.Random, depth: int) -> dict:
    kinds = ["string", "enum", "integer", "number", "boolean", "nullable"] + (["array", "object"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "string":
        return {"type": "string", "maxLength": rng.randint(3, 20)} if rng.random() < 0.7 else {"type": "string"}
    if kind == "enum":
        return {"enum": rng.sample(["low", "medium", "high", "paris", "rome", 1, 2, None, True], rng.randint(2, 4))}
    if kind == "integer":
        low = rng.randint(-50, 50)
        return {"type": "integer", "minimum": low, "maximum": low + rng.randint(0, 500)}
    if kind == "number":
        return {"type": "number", "minimum": rng.choice([-10, 0, 0.5]), "exclusiveMaximum": rng.choice([1, 100, 1e6])}
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "nullable":
        return {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    if kind == "array":
        return {"type": "array", "items": _random_value(rng, depth + 1), "maxItems": rng.randint(1, 3)}
    return _random_object(rng, depth)


def _is_valid(call, schema) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(json.loads(call.function.arguments))


def _keywords(schema) -> set[str]:
    found = set()
    if isinstance(schema, dict):
        for key, value in schema.items():
            found.add(key)
            if key in ("properties", "$defs", "definitions"):
                for sub in value.values():
                    found |= _keywords(sub)
            elif key in ("anyOf", "prefixItems"):
                for sub in value:
                    found |= _keywords(sub)
            elif key in ("items", "additionalProperties"):
                found |= _keywords(value)
    return found


@pytest.fixture(scope="module")
def walk_logits(backend):
    """Rows of Gumbel noise (argmax of a masked row = a random allowed token) plus a bonus for JSON
    punctuation and the stop token, so random strings, numbers and arrays end soon. Drawn once: noise
    per step costs more than the grammar. One torch thread: on a busy machine every small parallel op
    waits for the slowest thread."""
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    bonus = torch.zeros(VOCAB_SIZE)
    for token_id, token in enumerate(backend.tokenizer_info.decoded_vocab):
        if token and set(token.decode(errors="ignore")) <= set('"{}[],:'):
            bonus[token_id] = 10.0
    bonus[backend.tokenizer_info.stop_token_ids] = 10.0
    noise = torch.rand(WALK_NOISE_ROWS, VOCAB_SIZE, generator=torch.Generator().manual_seed(0))
    yield bonus - torch.log(-torch.log(noise))
    torch.set_num_threads(num_threads)


def _random_walk(backend, guided: GuidedDecoding, rng, walk_logits, tokenizer, max_steps=150) -> str | None:
    processor = backend.create(guided)
    token_ids = []
    for _ in range(max_steps):
        logits = walk_logits[rng.randrange(WALK_NOISE_ROWS)].clone()
        processor.apply(logits)
        token_id = int(logits.argmax())
        processor.accept(token_id)
        token_ids.append(token_id)
        if processor.is_terminated():
            return tokenizer.decode(token_ids)
    return None
