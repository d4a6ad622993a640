"""What crosses the engine's boundary: requests in, incremental outputs out. Imports no torch."""

from __future__ import annotations

from typing import Literal

import msgspec

from engine.errors import InvalidRequest

FinishReason = Literal["stop", "length", "abort", "error"]
GuidedKind = Literal["json_schema", "json_object", "structural_tag", "regex", "grammar"]


class GuidedDecoding(msgspec.Struct, frozen=True, kw_only=True):
    """A grammar the output must match; compiled (and cached) inside the engine.

    `spec` is a JSON Schema text for json_schema, xgrammar's structural-tag JSON for structural_tag,
    a regex, or an EBNF grammar; json_object needs none.
    """

    kind: GuidedKind
    spec: str = ""
    # Guards against degenerate repeats (engine.repeats); neither changes what the grammar allows.
    repeat_penalty: float = 0.0  # off the logits of tokens continuing a copy of an earlier array element
    end_on_repeat: bool = False  # end where the grammar may once a top-level value (a call) repeats


class SamplingParams(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 disables
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] | None = None
    seed: int | None = None
    max_tokens: int | None = 16  # None: until the context window is full
    stop: list[str] = []
    stop_token_ids: list[int] = []
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    logprobs: int | None = None  # None: no logprobs; k: the chosen token plus the top k
    guided: GuidedDecoding | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1

    def validate(self) -> None:
        checks = (
            (self.n >= 1, "n", "must be at least 1"),
            (self.temperature >= 0.0, "temperature", "must be non-negative"),
            (0.0 < self.top_p <= 1.0, "top_p", "must be in (0, 1]"),
            (self.top_k >= 0, "top_k", "must be non-negative"),
            (0.0 <= self.min_p <= 1.0, "min_p", "must be in [0, 1]"),
            (-2.0 <= self.presence_penalty <= 2.0, "presence_penalty", "must be in [-2, 2]"),
            (-2.0 <= self.frequency_penalty <= 2.0, "frequency_penalty", "must be in [-2, 2]"),
            (self.repetition_penalty > 0.0, "repetition_penalty", "must be positive"),
            (self.max_tokens is None or self.max_tokens >= 1, "max_tokens", "must be at least 1"),
            (self.logprobs is None or 0 <= self.logprobs <= 20, "logprobs", "must be in [0, 20]"),
        )
        for ok, param, message in checks:
            if not ok:
                raise InvalidRequest(f"{param} {message}", param=param)


class GenerateRequest(msgspec.Struct, kw_only=True):
    """One request; exactly one of `prompt` (text) and `prompt_token_ids` is set."""

    request_id: str
    params: SamplingParams = SamplingParams()
    prompt: str | None = None
    prompt_token_ids: list[int] | None = None
    priority: int = 0  # lower runs first; FCFS within a priority
    arrival_time: float | None = None  # defaults to when the engine receives it
    # Prefix-cache isolation (vLLM's cache_salt): cached KV is reused only by requests with the same salt.
    cache_salt: str | None = None


class TopLogprob(msgspec.Struct, array_like=True):
    token_id: int
    token: str
    logprob: float


class TokenLogprob(msgspec.Struct, array_like=True):
    token_id: int
    token: str
    logprob: float
    top: list[TopLogprob]


class CompletionOutput(msgspec.Struct, kw_only=True):
    """What one of the `n` completions produced since the previous output (a delta)."""

    index: int
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    finish_reason: FinishReason | None = None
    stop_reason: int | str | None = None  # the stop token id or stop string that ended it


EngineEventName = Literal[
    "queued", "grammar_compiled", "scheduled", "prefill", "first_token", "preempted", "resumed", "finished"
]


class EngineEvent(msgspec.Struct, array_like=True, frozen=True):
    """A moment in a request's life inside the engine, for traces and latency metrics.

    The engine records monotonic time in its step loop (no tracer, lock or I/O there) and converts to wall
    clock once, in its own process, when it ships the events: monotonic clocks need not agree across processes.
    `prefill` and `grammar_compiled` are intervals: `time_unix_nano` is the end, `duration_ns` how long it took.
    """

    name: EngineEventName
    time_unix_nano: int
    index: int = 0  # which of the request's n completions (0 for request-wide events)
    num_tokens: int = 0  # prefill: tokens computed in this chunk
    duration_ns: int = 0


class RequestOutput(msgspec.Struct, kw_only=True):
    request_id: str
    outputs: list[CompletionOutput]
    finished: bool
    num_prompt_tokens: int
    num_cached_tokens: int = 0
    error_code: str | None = None
    error_message: str | None = None
    error_param: str | None = None
    events: list[EngineEvent] | None = None  # on the finished output only, in time order


class EngineStats(msgspec.Struct, kw_only=True):
    num_running: int
    num_waiting: int
    kv_blocks_total: int
    kv_blocks_used: int
    kv_blocks_cached: int
    kv_blocks_free: int
    prefix_hit_rate: float
    prompt_tokens_per_s: float
    generation_tokens_per_s: float
    num_preemptions: int
    num_interrupted_steps: int = 0  # steps abandoned mid-way for a request that outranked all of them
    # Speculative decoding: draft tokens proposed and accepted since start; acceptance per running request.
    spec_draft_tokens: int = 0
    spec_accepted_tokens: int = 0
    spec_acceptance_by_request: dict[str, float] = {}


class ModelInfo(msgspec.Struct, kw_only=True):
    name: str
    path: str
    max_model_len: int
    vocab_size: int
    eos_token_ids: list[int]
    created: int


def merge_outputs(acc: RequestOutput | None, delta: RequestOutput) -> RequestOutput:
    """Fold a delta into an accumulated output (what a non-streaming caller wants)."""
    if acc is None:
        acc = RequestOutput(request_id=delta.request_id, outputs=[], finished=False,
                            num_prompt_tokens=delta.num_prompt_tokens, num_cached_tokens=delta.num_cached_tokens)
    by_index = {c.index: c for c in acc.outputs}
    for c in delta.outputs:
        prev = by_index.get(c.index)
        if prev is None:
            by_index[c.index] = CompletionOutput(index=c.index, text=c.text, token_ids=list(c.token_ids),
                                                 logprobs=list(c.logprobs) if c.logprobs is not None else None,
                                                 finish_reason=c.finish_reason, stop_reason=c.stop_reason)
            continue
        prev.text += c.text
        prev.token_ids.extend(c.token_ids)
        if c.logprobs is not None:
            prev.logprobs = (prev.logprobs or []) + c.logprobs
        prev.finish_reason = c.finish_reason or prev.finish_reason
        prev.stop_reason = c.stop_reason if c.stop_reason is not None else prev.stop_reason
    acc.outputs = [by_index[i] for i in sorted(by_index)]
    acc.finished = delta.finished
    acc.num_cached_tokens = delta.num_cached_tokens
    acc.events = delta.events if delta.events is not None else acc.events
    return acc
