"""The engine process: receive requests, step the engine, send outputs. Started by engine.client."""

from __future__ import annotations

import functools
import logging
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection

from engine.config import EngineConfig
from engine.cpu_threads import available_cpus, configure_openmp
from engine.errors import EngineError
from engine.messages import (
    AbortRequest,
    AddRequest,
    Outputs,
    Ready,
    Shutdown,
    StartupFailed,
    StatsQuery,
    StatsReply,
    decode_to_engine,
    encode,
)
from engine.protocol import GenerateRequest, GuidedDecoding, RequestOutput

log = logging.getLogger("flowgate.engine")
GRAMMAR_POLL_S = 0.005  # how often an idle loop looks for finished grammar compilations


def run_engine_core(config: EngineConfig, inbox: Connection, outbox: Connection) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_openmp(config.num_threads or available_cpus())  # before torch loads libgomp in this process
    try:
        from engine.llm_engine import LLMEngine

        engine = LLMEngine(config)
    except Exception as e:
        log.exception("engine failed to start")
        outbox.send_bytes(encode(StartupFailed(f"{type(e).__name__}: {e}")))
        return
    outbox.send_bytes(encode(Ready(engine.model_info)))
    EngineLoop(engine, inbox, outbox).run()


class EngineLoop:
    def __init__(self, engine, inbox: Connection, outbox: Connection):
        self.engine = engine
        self.inbox = inbox
        self.outbox = outbox
        # Grammars compile beside the step loop (xgrammar releases the GIL): a large schema takes seconds, and
        # every running request would stall for that long. One worker, so the grammar backend is built once.
        self._compiler = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grammar")
        self._compiling: dict[str, tuple[GenerateRequest, int, Future]] = {}  # with its receipt (monotonic ns)
        self._deferred: list = []  # messages read during a step, handled after it in arrival order
        self._interrupt = self._outranked if engine.config.interruptible_steps else None

    def run(self) -> None:
        try:
            while True:
                for msg in self._messages():
                    if not self._handle(msg):
                        return
                self._add_compiled()
                if self.engine.has_unfinished():
                    self._step()
        except (EOFError, OSError):
            log.info("client went away; engine exiting")
        finally:
            self._compiler.shutdown(wait=False, cancel_futures=True)

    def _messages(self):
        """What was read during the last step, then what waits in the pipe: block while idle; while busy,
        only drain what has already arrived between steps."""
        deferred, self._deferred = self._deferred, []
        yield from deferred
        while self.inbox.poll(self._poll_timeout()):
            yield decode_to_engine(self.inbox.recv_bytes())

    def _outranked(self, priority: int) -> bool:
        """Asked between a step's layers: read what has arrived (a grammar starts compiling at once; the rest
        waits for the step's end) and say whether a request ready to start outranks all of the step."""
        while self.inbox.poll(0):
            msg = decode_to_engine(self.inbox.recv_bytes())
            if isinstance(msg, AddRequest) and msg.request.params.guided is not None:
                self._handle(msg)  # compiling touches no engine state
            else:
                self._deferred.append(msg)
        return (any(isinstance(m, AddRequest) and m.request.priority < priority for m in self._deferred)
                or any(f.done() and r.priority < priority for r, _, f in self._compiling.values()))

    def _poll_timeout(self) -> float | None:
        if self.engine.has_unfinished():
            return 0
        return GRAMMAR_POLL_S if self._compiling else None

    def _handle(self, msg) -> bool:
        match msg:
            case AddRequest(request=request) if request.params.guided is not None:
                compile_grammar = functools.partial(_compile, self.engine, request.params.guided)
                received = time.monotonic_ns()
                self._compiling[request.request_id] = (request, received, self._compiler.submit(compile_grammar))
            case AddRequest(request=request):
                self._add(request)
            case AbortRequest(request_id=request_id):
                self._compiling.pop(request_id, None)
                self.engine.abort_request(request_id)
            case StatsQuery(call_id=call_id):
                self.outbox.send_bytes(encode(StatsReply(call_id, self.engine.stats())))
            case Shutdown():
                return False
        return True

    def _add(self, request: GenerateRequest, events: list[tuple] = ()) -> None:
        try:
            self.engine.add_request(request, events=events)
        except EngineError as e:
            self._send([_error_output(request.request_id, e.code, e.message, e.param)])

    def _add_compiled(self) -> None:
        """Admit the requests whose grammar is ready (cached now, so add_request does not compile again)."""
        for request_id, (request, received, future) in list(self._compiling.items()):
            if future.done():
                del self._compiling[request_id]
                compiled = ("grammar_compiled", *future.result()) if future.exception() is None else None
                self._add(request, [("queued", received, 0, 0, 0), *([compiled] if compiled else [])])

    def _step(self) -> None:
        try:
            outputs = self.engine.step(self._interrupt)
        except Exception:
            # Fail what was in flight rather than the process: the engine state is rebuilt per request.
            log.error("engine step failed:\n%s", traceback.format_exc())
            outputs = [
                _error_output(rid, "engine_error", "internal engine error")
                for rid in list(self.engine.requests)
            ]
            for rid in list(self.engine.requests):
                self.engine.abort_request(rid)
        if outputs:
            self._send(outputs)

    def _send(self, outputs: list[RequestOutput]) -> None:
        self.outbox.send_bytes(encode(Outputs(outputs)))


def _compile(engine, guided: GuidedDecoding) -> tuple[int, int, int, int]:
    """In the compiler thread. A failure stays in the future: adding the request raises it again, as its error.

    Returns the grammar_compiled event's (end in monotonic ns, index, num_tokens, duration ns); a cached
    grammar takes microseconds."""
    start = time.monotonic_ns()
    engine.grammar.compile(guided)
    engine.grammar.min_tokens(guided)
    end = time.monotonic_ns()
    return end, 0, 0, end - start


def _error_output(request_id: str, code: str, message: str, param: str | None = None) -> RequestOutput:
    return RequestOutput(
        request_id=request_id,
        outputs=[],
        finished=True,
        num_prompt_tokens=0,
        error_code=code,
        error_message=message,
        error_param=param,
    )
