"""Grammar-constrained decoding with xgrammar: compile a `GuidedDecoding` once, mask logits per sequence.

`GrammarBackend` lives in the engine process. It builds xgrammar's TokenizerInfo from the model directory,
compiles each distinct (kind, spec) once, and hands every sequence its own `GrammarLogitsProcessor` (one
`GrammarMatcher` plus a one-row token bitmask).

Traps handled here rather than left to callers:
- Special tokens. xgrammar sees `<|im_start|>` as the literal text "<|im_start|>", which is a legal JSON
  string character sequence, so the stock TokenizerInfo lets a chat-control token appear inside a JSON
  string. Every special added token is blanked out of the vocabulary instead: xgrammar then treats it as
  special and never allows it, except the stop tokens, which are allowed exactly where the grammar may end.
- Whitespace. Small models keep emitting whitespace inside JSON when they may. Every JSON Schema (the
  json kinds and each json_schema node of a structural tag) is compiled with `any_whitespace=False`:
  `{"a": 1, "b": [2, 3]}` spacing and nothing else.
- Control characters. xgrammar 0.2.8 lets strings with minLength/maxLength contain raw control characters
  (`"a<TAB>b"`, invalid JSON). JSON Schemas therefore go through xgrammar's EBNF, with that character class
  corrected, before compiling (see `json_schema_ebnf`).

Once the grammar is complete only the stop tokens are allowed; accepting one terminates the matcher.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path

import torch
import xgrammar as xgr
from transformers import AutoTokenizer

from engine.closing import BudgetSteering, CandidateTokens, shortest_completion
from engine.errors import InvalidRequest
from engine.logits_process import LogitsProcessor
from engine.protocol import GuidedDecoding
from engine.repeats import RepeatGuard, TokenTexts

COMPILED_GRAMMAR_CACHE_SIZE = 512
MIN_TOKENS_LIMIT = 4096
MIN_TOKENS_NODES = 20_000
_WHAT_BY_KIND = {"structural_tag": "a complete tool call", "json_schema": "JSON matching the schema",
                 "json_object": "a JSON object"}
# A length-bounded string's character in xgrammar's EBNF, and what JSON allows there (no C0 controls).
_BOUNDED_STRING_CHAR = r"[^\"\\\r\n]"
_JSON_STRING_CHAR = r"[^\0-\x1f\"\\]"
# The request parameter a failing grammar most likely came from, for the 400 the gateway returns.
_PARAM_BY_KIND = {
    "json_schema": "response_format",
    "json_object": "response_format",
    "structural_tag": "tools",
    "regex": "guided_regex",
    "grammar": "guided_grammar",
}


class GrammarBackend:
    def __init__(self, model_dir: Path, vocab_size: int):
        self.vocab_size = vocab_size
        self.tokenizer_info = load_tokenizer_info(Path(model_dir), vocab_size)
        self._compiler = xgr.GrammarCompiler(self.tokenizer_info, max_threads=min(8, os.cpu_count() or 1))
        self._compile = functools.lru_cache(maxsize=COMPILED_GRAMMAR_CACHE_SIZE)(self._compile_uncached)
        self.candidates = CandidateTokens(self.tokenizer_info)
        self._texts: TokenTexts | None = None  # built on the first request with a repeat penalty
        self._min_tokens = functools.lru_cache(maxsize=COMPILED_GRAMMAR_CACHE_SIZE)(self._min_tokens_uncached)

    def validate(self, guided: GuidedDecoding, max_tokens: int | None = None) -> None:
        """Raise InvalidRequest if the grammar cannot be compiled, or if `max_tokens` is below the shortest
        output it allows; a success leaves both cached for create()."""
        self.compile(guided)
        shortest = self.min_tokens(guided)
        if max_tokens is not None and shortest is not None and max_tokens < shortest:
            raise InvalidRequest(
                f"max_tokens is {max_tokens}, but the shortest output this request allows "
                f"({_WHAT_BY_KIND.get(guided.kind, 'grammar-valid output')}) takes {shortest} tokens",
                param="max_tokens")

    def min_tokens(self, guided: GuidedDecoding) -> int | None:
        """Tokens in the shortest complete output (0 when free text may end at once); None if too costly."""
        return self._min_tokens(guided.kind, guided.spec)

    def create(self, guided: GuidedDecoding, max_tokens: int | None = None) -> GrammarLogitsProcessor:
        steering = None if max_tokens is None else BudgetSteering(self.candidates, max_tokens)
        guard = None
        if guided.repeat_penalty and self._texts is None:
            self._texts = TokenTexts(self.candidates.bytes_of)
        if guided.repeat_penalty or guided.end_on_repeat:
            guard = RepeatGuard(self.candidates.bytes_of, self.candidates.stop.tolist(), guided.end_on_repeat,
                                guided.repeat_penalty, self._texts if guided.repeat_penalty else None)
        return GrammarLogitsProcessor(self.compile(guided), self.vocab_size, steering, guard)

    def _min_tokens_uncached(self, kind: str, spec: str) -> int | None:
        matcher = xgr.GrammarMatcher(self._compile(kind, spec))
        completion = shortest_completion(matcher, self.candidates, limit=MIN_TOKENS_LIMIT, max_nodes=MIN_TOKENS_NODES)
        return None if completion is None else completion.distance

    def compile(self, guided: GuidedDecoding) -> xgr.CompiledGrammar:
        try:
            return self._compile(guided.kind, guided.spec)
        except (RuntimeError, ValueError, TypeError) as e:  # how xgrammar and pydantic reject a spec
            raise InvalidRequest(
                f"invalid {guided.kind} grammar: {_clean_message(e)}",
                param=_PARAM_BY_KIND.get(guided.kind, "guided"),
            ) from e

    def _compile_uncached(self, kind: str, spec: str) -> xgr.CompiledGrammar:
        if kind == "json_schema":
            return self._compiler.compile_grammar(json_schema_ebnf(_load_json(spec, "the schema")))
        if kind == "json_object":
            return self._compiler.compile_grammar(json_schema_ebnf({"type": "object"}))
        if kind == "structural_tag":
            return self._compiler.compile_structural_tag(json.dumps(_with_json_grammars(spec)))
        if kind == "regex":
            return self._compiler.compile_regex(spec)
        if kind == "grammar":
            return self._compiler.compile_grammar(spec)
        raise ValueError(f"unknown guided decoding kind {kind!r}")


class GrammarLogitsProcessor(LogitsProcessor):
    """One sequence's matcher: masks every token the grammar cannot accept next."""

    def __init__(self, compiled: xgr.CompiledGrammar, vocab_size: int, steering: BudgetSteering | None = None,
                 guard: RepeatGuard | None = None):
        self._matcher = xgr.GrammarMatcher(compiled)
        self._bitmask = xgr.allocate_token_bitmask(1, vocab_size)
        self._vocab_size = vocab_size
        self._steering = steering
        self._guard = guard
        self._num_accepted = 0

    def apply(self, logits: torch.Tensor) -> None:
        if self._matcher.is_terminated():
            return
        if self._matcher.fill_next_token_bitmask(self._bitmask):  # False: every token allowed (free text)
            bitmask = self._bitmask if logits.device.type == "cpu" else self._bitmask.to(logits.device)
            xgr.apply_token_bitmask_inplace(logits.view(1, -1), bitmask, vocab_size=self._vocab_size)
        if self._steering is not None:
            self._steering.apply(self._matcher, logits, self._num_accepted)
        if self._guard is not None:
            self._guard.apply(logits)

    def accept(self, token_id: int) -> None:
        if not self._matcher.accept_token(token_id):
            # Only possible if something sampled outside the mask apply() produced.
            raise RuntimeError(f"token {token_id} violates the request's grammar")
        self._num_accepted += 1
        if self._guard is not None:
            self._guard.accept(token_id)

    def is_terminated(self) -> bool:
        return self._matcher.is_terminated()

    def forced_tokens(self) -> list[int]:
        if self._matcher.is_terminated():
            return []
        return self._matcher.find_jump_forward_tokens()

    def num_allowed(self, draft: list[int]) -> int:
        n = 0
        for token_id in draft:
            if self._matcher.is_terminated() or not self._matcher.accept_token(token_id):
                break
            n += 1
        if n:
            self._matcher.rollback(n)
        return n


def json_schema_ebnf(schema: dict | bool, any_order: bool = False) -> str:
    """The EBNF xgrammar derives from a JSON Schema (no optional whitespace, no undeclared properties),
    with raw control characters kept out of length-bounded strings."""
    grammar = xgr.Grammar.from_json_schema(
        json.dumps(schema), any_whitespace=False, strict_mode=True, any_order=any_order
    )
    return str(grammar).replace(_BOUNDED_STRING_CHAR, _JSON_STRING_CHAR)


def load_tokenizer_info(model_dir: Path, vocab_size: int) -> xgr.TokenizerInfo:
    """xgrammar's view of the vocabulary, with special tokens blanked (see the module docstring)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    detected = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
    encoded_vocab = [""] * vocab_size
    for token, token_id in tokenizer.get_vocab().items():
        if token_id < vocab_size:
            encoded_vocab[token_id] = token
    for token_id, added in tokenizer.added_tokens_decoder.items():
        if added.special and token_id < vocab_size:
            encoded_vocab[token_id] = ""
    return xgr.TokenizerInfo(
        encoded_vocab,
        detected.vocab_type,
        vocab_size=vocab_size,
        stop_token_ids=stop_token_ids(model_dir, tokenizer),
        add_prefix_space=detected.add_prefix_space,
    )


def stop_token_ids(model_dir: Path, tokenizer) -> list[int]:
    """The tokenizer's EOS plus generation_config.json's eos_token_id (an int or a list)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    generation_config = model_dir / "generation_config.json"
    if generation_config.exists():
        eos = json.loads(generation_config.read_text()).get("eos_token_id")
        ids.update([eos] if isinstance(eos, int) else eos or [])
    if not ids:
        raise ValueError(f"{model_dir} defines no EOS token to end a grammar with")
    return sorted(ids)


def _with_json_grammars(spec: str) -> dict:
    """The structural tag with each json_schema node replaced by its corrected EBNF grammar."""

    def rewrite(node):
        if isinstance(node, list):
            return [rewrite(value) for value in node]
        if not isinstance(node, dict):
            return node
        if node.get("type") == "json_schema" and node.get("style", "json") == "json":
            if "json_schema" not in node:
                raise ValueError("a json_schema format needs a json_schema")
            ebnf = json_schema_ebnf(node["json_schema"], any_order=bool(node.get("any_order", False)))
            return {"type": "grammar", "grammar": ebnf}
        return {key: rewrite(value) for key, value in node.items()}

    return rewrite(_load_json(spec, "the structural tag"))


def _load_json(spec: str, what: str):
    try:
        return json.loads(spec)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} is not valid JSON ({e})") from e


def _clean_message(error: Exception) -> str:
    """xgrammar's message without its C++ source location and check expression."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    message = lines[-1] if lines else type(error).__name__
    message = re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", message)
    message = re.sub(r"^Check failed: \(.*?\) is false: ?", "", message)
    return message or "xgrammar cannot compile it (too large or unsupported)"
