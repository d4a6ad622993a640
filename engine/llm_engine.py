"""The synchronous engine: add requests, `step()` until done. The async client drives it in its own process."""

from __future__ import annotations

import functools
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine import assets
from engine.config import EngineConfig
from engine.detokenizer import IncrementalDetokenizer
from engine.errors import ContextLengthExceeded, InvalidRequest
from engine.kv_cache_manager import KVCacheManager
from engine.logits_process import LogitsProcessor
from engine.model_runner import ModelRunner, StepInterrupted
from engine.protocol import (
    CompletionOutput,
    EngineEvent,
    EngineStats,
    GenerateRequest,
    ModelInfo,
    RequestOutput,
    SamplingParams,
    TokenLogprob,
    TopLogprob,
    merge_outputs,
)
from engine.sampler import Sampler, SamplerOutput
from engine.scheduler import Scheduler
from engine.sequence import Sequence
from engine.tokenizer import Tokenizer


@dataclass(slots=True)
class RequestState:
    request: GenerateRequest
    seqs: list[Sequence]
    num_prompt_tokens: int
    reported_finished: set[int] = field(default_factory=set)
    events: list[tuple] = field(default_factory=list)  # request-wide ones; per-completion ones are on seqs


class LLMEngine:
    def __init__(self, config: EngineConfig):
        self.config = config
        self.model_dir = Path(assets.resolve(config.model))
        self.tokenizer = Tokenizer.from_dir(self.model_dir)
        self.runner = ModelRunner(config, self.model_dir)
        mc = self.runner.model_config
        self.max_model_len = min(config.max_model_len or mc.max_position_embeddings, mc.max_position_embeddings)
        self.kv = KVCacheManager(self.runner.num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(self.kv, config.max_num_seqs, config.max_num_batched_tokens)
        self.sampler = Sampler(mc.vocab_size, config.seed)
        self.eos_token_ids = set(self.tokenizer.eos_token_ids)
        self.requests: dict[str, RequestState] = {}
        self._seq_ids = itertools.count()
        self._grammar = None
        self._step_end_ns = 0
        self.num_interrupted_steps = 0
        self._throughput: deque[tuple[float, int, int]] = deque(maxlen=256)
        self.speculator = None
        if config.speculative != "off":
            from engine.spec import Speculator

            self.speculator = Speculator.build(config, self.model_dir, self.runner, self.sampler, self.kv)

    @property
    def model_info(self) -> ModelInfo:
        return ModelInfo(
            name=self.config.served_model_name or self.config.model,
            path=str(self.model_dir),
            max_model_len=self.max_model_len,
            vocab_size=self.runner.model_config.vocab_size,
            eos_token_ids=sorted(self.eos_token_ids),
            created=int(self.model_dir.stat().st_mtime),
        )

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    def add_request(
        self, request: GenerateRequest, logits_processors: list[LogitsProcessor] = (), events: list[tuple] = ()
    ) -> None:
        """Validate and queue a request; raises InvalidRequest / ContextLengthExceeded.

        `events`: what happened to it before (the engine loop's receipt and grammar compilation), as
        (name, monotonic ns, index, num_tokens, duration ns); by default it is queued now."""
        if request.request_id in self.requests:
            raise InvalidRequest(f"duplicate request id {request.request_id!r}", param="request_id")
        params = request.params
        params.validate()
        prompt_ids = self._prompt_token_ids(request)
        max_tokens = self._resolve_max_tokens(params, len(prompt_ids))
        self._check_fits(len(prompt_ids) + max_tokens)
        if params.guided is not None:
            self.grammar.validate(params.guided, max_tokens)
        seqs = [self._new_sequence(request, i, prompt_ids, max_tokens, logits_processors) for i in range(params.n)]
        for follower in seqs[1:]:
            follower.blocked_on = seqs[0]
        events = list(events) or [("queued", time.monotonic_ns(), 0, 0, 0)]
        self.requests[request.request_id] = RequestState(request, seqs, len(prompt_ids), events=events)
        for seq in seqs:
            self.scheduler.add(seq)

    def abort_request(self, request_id: str) -> None:
        state = self.requests.pop(request_id, None)
        if state is not None:
            for seq in state.seqs:
                if not seq.is_finished:
                    self.scheduler.finish(seq)

    def step(self, interrupt: Callable[[int], bool] | None = None) -> list[RequestOutput]:
        """Schedule and run one step; returns the outputs it produced.

        `interrupt(priority)` is asked between decoder layers with the most important priority in the step;
        True abandons the step (nothing is emitted, its new slots go back) so that a request that just arrived
        and outranks everything in it starts now rather than after it: a CPU step takes tens of
        milliseconds, most of a paid request's time to first token."""
        if self.speculator is not None:
            self.speculator.propose(self.scheduler.running)
        out = self.scheduler.schedule()
        if not out.scheduled:
            return []
        start = time.monotonic_ns()
        for seq in out.preempted:
            seq.events.append(("preempted", start, seq.index, 0, 0))
        for seq in out.admitted:
            seq.events.append(("resumed" if seq.num_preemptions else "scheduled", start, seq.index, 0, 0))
        # A decode computes exactly the last token of a sequence that has output; anything else is prefill
        # (including the recompute after a preemption).
        prefills = [(seq, n) for seq, n in out.scheduled.items()
                    if seq.num_computed_tokens < seq.num_tokens - 1 or seq.num_tokens == seq.num_prompt_tokens]
        top = min(seq.priority for seq in out.scheduled)
        try:
            logits, seqs = self.runner.execute(out.scheduled, interrupt and functools.partial(interrupt, top))
        except StepInterrupted:
            for seq in out.scheduled:
                seq.spec_token_ids.clear()
                self.kv.free_tail(seq)
            self.num_interrupted_steps += 1
            return []
        end = time.monotonic_ns()
        for seq, n in prefills:
            seq.events.append(("prefill", end, seq.index, n, end - start))
        self.scheduler.update_from_output(out)
        self._step_end_ns = end  # the emitted tokens' first_token / finished events
        num_rows = num_sampled = len(logits) if seqs else 0
        if seqs and self.speculator is not None:
            num_sampled = self.speculator.verify(logits, seqs, self._append_token)
        elif seqs:
            self._append_tokens(seqs, self.sampler(logits, seqs))
        self._record_throughput(out.num_scheduled_tokens - num_rows, num_sampled)
        return self._collect_outputs({s.request_id for s in out.scheduled})  # sampled ones are scheduled too

    def stats(self) -> EngineStats:
        used, cached, free = self.kv.pool.counts()
        prompt_rate, gen_rate = self._rates()
        return EngineStats(
            num_running=len(self.scheduler.running),
            num_waiting=self.scheduler.num_waiting,
            kv_blocks_total=self.kv.pool.num_blocks,
            kv_blocks_used=used,
            kv_blocks_cached=cached,
            kv_blocks_free=free,
            prefix_hit_rate=self.kv.prefix_hit_rate,
            prompt_tokens_per_s=prompt_rate,
            generation_tokens_per_s=gen_rate,
            num_preemptions=self.scheduler.num_preemptions,
            num_interrupted_steps=self.num_interrupted_steps,
            **(self.speculator.stats(self.scheduler.running) if self.speculator is not None else {}),
        )

    def generate(self, prompts: list[str | list[int]], params: SamplingParams | list[SamplingParams]) -> list[RequestOutput]:
        """Run prompts to completion; one merged RequestOutput each, in order (for tests and benchmarks)."""
        params = params if isinstance(params, list) else [params] * len(prompts)
        ids = []
        for p, sp in zip(prompts, params, strict=True):
            rid = f"gen-{next(self._seq_ids)}"
            text, tokens = (p, None) if isinstance(p, str) else (None, p)
            self.add_request(GenerateRequest(request_id=rid, prompt=text, prompt_token_ids=tokens, params=sp))
            ids.append(rid)
        merged: dict[str, RequestOutput] = {}
        while self.has_unfinished():
            for output in self.step():
                merged[output.request_id] = merge_outputs(merged.get(output.request_id), output)
        return [merged[rid] for rid in ids]

    @property
    def grammar(self):
        if self._grammar is None:
            from engine.grammar import GrammarBackend

            self._grammar = GrammarBackend(self.model_dir, self.runner.model_config.vocab_size)
        return self._grammar

    def _prompt_token_ids(self, request: GenerateRequest) -> list[int]:
        if (request.prompt is None) == (request.prompt_token_ids is None):
            raise InvalidRequest("exactly one of prompt and prompt_token_ids is required", param="prompt")
        ids = request.prompt_token_ids
        if ids is None:
            ids = self.tokenizer.encode(request.prompt)
        vocab = self.runner.model_config.vocab_size
        if not ids:
            raise InvalidRequest("the prompt is empty", param="prompt")
        if any(not 0 <= t < vocab for t in ids):
            raise InvalidRequest(f"prompt token ids must be in [0, {vocab})", param="prompt")
        return list(ids)

    def _resolve_max_tokens(self, params: SamplingParams, num_prompt_tokens: int) -> int:
        if num_prompt_tokens >= self.max_model_len:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.max_model_len} tokens; the prompt has "
                f"{num_prompt_tokens} tokens, leaving no room to generate.", param="prompt")
        if params.max_tokens is None:
            return self.max_model_len - num_prompt_tokens
        if num_prompt_tokens + params.max_tokens > self.max_model_len:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                f"{num_prompt_tokens + params.max_tokens} tokens ({num_prompt_tokens} in the prompt, "
                f"{params.max_tokens} for the completion). Please reduce the prompt or max_tokens.",
                param="max_tokens")
        return params.max_tokens

    def _check_fits(self, num_tokens: int) -> None:
        needed = self.kv.blocks_needed(num_tokens)
        if needed > self.kv.pool.num_blocks:
            raise InvalidRequest(
                f"the request needs {needed} KV blocks ({num_tokens} tokens) but the cache holds only "
                f"{self.kv.pool.num_blocks}; it could never run", param="max_tokens")

    def _new_sequence(self, request, index, prompt_ids, max_tokens, extra_processors) -> Sequence:
        params = request.params
        arrival = time.monotonic() if request.arrival_time is None else request.arrival_time
        seq = Sequence(
            seq_id=next(self._seq_ids), request_id=request.request_id, index=index,
            token_ids=list(prompt_ids), num_prompt_tokens=len(prompt_ids), params=params,
            max_tokens=max_tokens, priority=request.priority, arrival_time=arrival,
            aging_s=self.config.priority_aging_s, cache_salt=request.cache_salt,
        )
        if params.seed is not None:
            seq.generator = torch.Generator().manual_seed(params.seed + index)
        seq.logits_processors = list(extra_processors)
        if params.guided is not None:
            seq.logits_processors.append(self.grammar.create(params.guided, max_tokens))
        seq.detokenizer = IncrementalDetokenizer(
            self.tokenizer, seq.token_ids, len(prompt_ids), params.stop, params.include_stop_str_in_output)
        return seq

    def _append_tokens(self, seqs: list[Sequence], sampled: SamplerOutput) -> None:
        for i, (seq, token_id) in enumerate(zip(seqs, sampled.token_ids, strict=True)):
            self._append_token(seq, sampled, i, token_id)

    def _append_token(self, seq: Sequence, sampled: SamplerOutput, row: int, token_id: int) -> bool:
        """Emit one token; returns False once the sequence has finished (and given its blocks back)."""
        seq.token_ids.append(token_id)
        seq.pending_token_ids.append(token_id)
        if len(seq.token_ids) == seq.num_prompt_tokens + 1:
            seq.events.append(("first_token", self._step_end_ns, seq.index, 0, 0))
        if seq.params.logprobs is not None:
            seq.pending_logprobs.append(self._token_logprob(sampled, row, token_id, seq.params.logprobs))
        for processor in seq.logits_processors:
            processor.accept(token_id)
        self._check_stop(seq, token_id)
        if seq.finish_reason is not None:
            seq.events.append(("finished", self._step_end_ns, seq.index, 0, 0))
            self.scheduler.finish(seq)
            return False
        return True

    def _check_stop(self, seq: Sequence, token_id: int) -> None:
        params = seq.params
        stop_string = seq.detokenizer.update()
        if token_id in params.stop_token_ids:
            seq.finish_reason, seq.stop_reason = "stop", token_id
        elif token_id in self.eos_token_ids and not params.ignore_eos:
            seq.finish_reason = "stop"
        elif stop_string is not None:
            seq.finish_reason, seq.stop_reason = "stop", stop_string
        elif any(p.is_terminated() for p in seq.logits_processors):
            seq.finish_reason = "stop"
        elif seq.num_output_tokens >= seq.max_tokens or seq.num_tokens >= self.max_model_len:
            seq.finish_reason = "length"

    def _token_logprob(self, sampled: SamplerOutput, row: int, token_id: int, k: int) -> TokenLogprob:
        top = []
        if k:
            ids = sampled.top_ids[row, :k].tolist()
            lps = sampled.top_logprobs[row, :k].tolist()
            top = [TopLogprob(t, self.tokenizer.decode([t], skip_special_tokens=False), lp) for t, lp in zip(ids, lps, strict=True)]
        text = self.tokenizer.decode([token_id], skip_special_tokens=False)
        return TokenLogprob(token_id, text, float(sampled.logprobs[row]), top)

    def _collect_outputs(self, request_ids: set[str]) -> list[RequestOutput]:
        outputs = []
        for rid in request_ids:
            state = self.requests.get(rid)
            if state is None:
                continue
            completions = [self._completion_delta(state, seq) for seq in state.seqs]
            completions = [c for c in completions if c is not None]
            finished = all(seq.is_finished for seq in state.seqs)
            if completions or finished:
                outputs.append(RequestOutput(
                    request_id=rid, outputs=completions, finished=finished,
                    num_prompt_tokens=state.num_prompt_tokens, num_cached_tokens=state.seqs[0].num_cached_tokens,
                    events=_wall_clock_events(state) if finished else None))
            if finished:
                del self.requests[rid]
        return outputs

    def _completion_delta(self, state: RequestState, seq: Sequence) -> CompletionOutput | None:
        finished_now = seq.is_finished and seq.index not in state.reported_finished
        text = seq.detokenizer.take_delta(seq.is_finished)
        if not (text or seq.pending_token_ids or finished_now):
            return None
        if finished_now:
            state.reported_finished.add(seq.index)
        delta = CompletionOutput(
            index=seq.index, text=text, token_ids=seq.pending_token_ids,
            logprobs=seq.pending_logprobs if seq.params.logprobs is not None else None,
            finish_reason=seq.finish_reason if finished_now else None,
            stop_reason=seq.stop_reason if finished_now else None,
        )
        seq.pending_token_ids, seq.pending_logprobs = [], []
        return delta

    def _record_throughput(self, num_prompt_tokens: int, num_generated: int) -> None:
        self._throughput.append((time.monotonic(), num_prompt_tokens, num_generated))

    def _rates(self) -> tuple[float, float]:
        if len(self._throughput) < 2:
            return 0.0, 0.0
        span = self._throughput[-1][0] - self._throughput[0][0]
        if span <= 0:
            return 0.0, 0.0
        return (sum(p for _, p, _ in self._throughput) / span, sum(g for _, _, g in self._throughput) / span)


def _wall_clock_events(state: RequestState) -> list[EngineEvent]:
    """The request's events in time order, shifted from this process's monotonic clock to the wall clock."""
    offset = time.time_ns() - time.monotonic_ns()
    raw = sorted([*state.events, *(e for seq in state.seqs for e in seq.events)], key=lambda e: e[1])
    return [EngineEvent(name, t + offset, index, num_tokens, duration) for name, t, index, num_tokens, duration in raw]
