"""Messages between the async client and the engine process (msgpack over pipes). Imports no torch."""

from __future__ import annotations

import msgspec

from engine.protocol import EngineStats, GenerateRequest, ModelInfo, RequestOutput


class AddRequest(msgspec.Struct, tag=True):
    request: GenerateRequest


class AbortRequest(msgspec.Struct, tag=True):
    request_id: str


class StatsQuery(msgspec.Struct, tag=True):
    call_id: int


class Shutdown(msgspec.Struct, tag=True):
    pass


class Ready(msgspec.Struct, tag=True):
    model_info: ModelInfo


class StartupFailed(msgspec.Struct, tag=True):
    message: str


class Outputs(msgspec.Struct, tag=True):
    outputs: list[RequestOutput]


class StatsReply(msgspec.Struct, tag=True):
    call_id: int
    stats: EngineStats


ToEngine = AddRequest | AbortRequest | StatsQuery | Shutdown
FromEngine = Ready | StartupFailed | Outputs | StatsReply

encode = msgspec.msgpack.Encoder().encode
decode_to_engine = msgspec.msgpack.Decoder(ToEngine).decode
decode_from_engine = msgspec.msgpack.Decoder(FromEngine).decode
