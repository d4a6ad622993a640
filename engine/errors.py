"""Typed errors at the engine's boundary. The gateway maps each to one HTTP status in one place."""


class EngineError(Exception):
    """Base of every error the engine reports to its callers."""

    code: str = "engine_error"

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(EngineError):
    code = "invalid_request"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class EngineOverloaded(EngineError):
    code = "engine_overloaded"


class EngineDead(EngineError):
    code = "engine_dead"


ERRORS_BY_CODE: dict[str, type[EngineError]] = {
    cls.code: cls for cls in (EngineError, InvalidRequest, ContextLengthExceeded, EngineOverloaded, EngineDead)
}


def error_from_code(code: str, message: str, param: str | None = None) -> EngineError:
    return ERRORS_BY_CODE.get(code, EngineError)(message, param=param)
