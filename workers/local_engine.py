"""`flowgate worker --engine local`: lines run on an engine this worker owns (a dedicated batch machine).

The engine client's event loop lives in a background thread for the worker's lifetime; a chunk's lines are
submitted together, ordered by their rendered prompt, so lines that share a prefix arrive side by side and the
prefix cache serves all but the first. Plain chat/completions sampling only: tools, response_format and
logprobs are gateway features, and such lines end as errors naming that.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from concurrent.futures import Future

from engine.client import AsyncEngine
from engine.config import EngineConfig
from engine.errors import EngineError, InvalidRequest
from engine.protocol import GenerateRequest, RequestOutput, SamplingParams, merge_outputs
from workers.config import BATCH_PRIORITY
from workers.engine_http import Transient, line_error, outcome_id
from workers.records import InputLine, LineResponse, Outcome

UNSUPPORTED = ("tools", "response_format", "logprobs", "top_logprobs", "logit_bias")


class LocalEngine:
    def __init__(self, config: EngineConfig):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="local-engine-loop", daemon=True).start()
        self.engine: AsyncEngine = self.call(AsyncEngine.start(config)).result()
        self.model = self.engine.model_info.name

    def call(self, coro) -> Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def prompt(self, endpoint: str, body: dict) -> str:
        if endpoint == "/v1/completions":
            prompt = body.get("prompt")
            if not isinstance(prompt, str):
                raise InvalidRequest("the local engine takes one string prompt per line", param="prompt")
            return prompt
        return self.engine.tokenizer.apply_chat_template(body["messages"], add_generation_prompt=True)

    def order(self, endpoint: str, lines: list[InputLine]) -> list[InputLine]:
        """Lines sorted by prompt: shared prefixes next to each other (unrenderable lines last)."""
        def key(line: InputLine) -> tuple[int, str]:
            try:
                return 0, self.prompt(endpoint, line.body)
            except Exception:
                return 1, ""
        return sorted(lines, key=key)

    async def run_line(self, endpoint: str, line: InputLine) -> Outcome:
        """Runs on the caller's loop; the engine work happens on the engine's loop."""
        return await asyncio.wrap_future(self.call(self._run(endpoint, line)))

    async def _run(self, endpoint: str, line: InputLine) -> Outcome:
        body = line.body
        if used := [name for name in UNSUPPORTED if body.get(name)]:
            return line_error(line.custom_id, "unsupported_by_local_engine",
                              f"{', '.join(used)} need the gateway; run this job on a gateway-backed worker.")
        try:
            params = sampling(body)
            request = GenerateRequest(request_id="bulk-" + secrets.token_hex(8), params=params,
                                      prompt=self.prompt(endpoint, body), priority=BATCH_PRIORITY)
            final: RequestOutput | None = None
            async for delta in self.engine.generate(request):
                final = merge_outputs(final, delta)
        except InvalidRequest as exc:
            return line_error(line.custom_id, exc.code, exc.message)
        except EngineError as exc:
            raise Transient(exc.message) from exc
        assert final is not None
        return Outcome(id=outcome_id(), custom_id=line.custom_id, error=None, response=LineResponse(
            status_code=200, request_id=request.request_id, body=completion_body(endpoint, self.model, final)))


def sampling(body: dict) -> SamplingParams:
    stop = body.get("stop")
    params = SamplingParams(
        n=body.get("n", 1), temperature=body.get("temperature", 1.0) if body.get("temperature") is not None
        else 1.0, top_p=body.get("top_p") or 1.0, seed=body.get("seed"),
        max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
        stop=[stop] if isinstance(stop, str) else list(stop or []),
        presence_penalty=body.get("presence_penalty", 0.0), frequency_penalty=body.get("frequency_penalty", 0.0),
    )
    params.validate()
    return params


def completion_body(endpoint: str, model: str, out: RequestOutput) -> dict:
    num_completion = sum(len(c.token_ids) for c in out.outputs)
    usage = {"prompt_tokens": out.num_prompt_tokens, "completion_tokens": num_completion,
             "total_tokens": out.num_prompt_tokens + num_completion}
    created = int(time.time())
    if endpoint == "/v1/completions":
        choices = [{"index": c.index, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}
                   for c in out.outputs]
        return {"id": "cmpl-" + secrets.token_hex(12), "object": "text_completion", "created": created,
                "model": model, "choices": choices, "usage": usage}
    choices = [{"index": c.index, "message": {"role": "assistant", "content": c.text}, "logprobs": None,
                "finish_reason": c.finish_reason} for c in out.outputs]
    return {"id": "chatcmpl-" + secrets.token_hex(12), "object": "chat.completion", "created": created,
            "model": model, "choices": choices, "usage": usage}
