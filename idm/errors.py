"""Typed IDM errors: every failure the protocol layer reports is one of these.

Each error carries a wire ``code`` (the string sent in an error reply) so the same value names the
problem on both ends: the zone builds error replies from it and the host raises ``RemoteError`` with it.
``IdmError`` is its own base: the layers above (PID 1's handlers, the host) translate their own errors
to and from it.
"""

from __future__ import annotations

# Wire error codes (docs/idm.md lists them).
BAD_FRAME = "bad-frame"
FRAME_TOO_LARGE = "frame-too-large"
BAD_MESSAGE = "bad-message"
UNSUPPORTED_VERSION = "unsupported-version"
UNKNOWN_TYPE = "unknown-type"
CREDIT_EXCEEDED = "credit-exceeded"
INVALID_ARGUMENT = "invalid-argument"
NOT_FOUND = "not-found"
HANDLER_FAILED = "handler-failed"
CLOSED = "closed"
TIMEOUT = "timeout"


class IdmError(Exception):
    """Base of every IDM error; ``code`` is the wire error code."""

    code = "idm"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ProtocolError(IdmError):
    """The byte stream or a message broke the protocol. The connection stays up; the reader resynchronises."""

    code = BAD_FRAME


class FrameError(ProtocolError):
    """Framing was broken (bad magic, bad length, undecodable body); the reader skipped to the next frame."""


class SchemaError(ProtocolError):
    """The body decoded but is not a valid message. ``msg_id`` is the request id when it could be read."""

    code = BAD_MESSAGE

    def __init__(self, message: str, code: str = BAD_MESSAGE, msg_id: int = 0, kind: str = "") -> None:
        super().__init__(message, code)
        self.msg_id = msg_id
        self.kind = kind


class RemoteError(IdmError):
    """The peer answered a request with an error reply (``code``, ``message``)."""

    def __init__(self, code: str, message: str, request_type: str = "") -> None:
        prefix = f"{request_type}: " if request_type else ""
        super().__init__(f"{prefix}{message} [{code}]", code)
        self.remote_message = message
        self.request_type = request_type


class ConnectionClosed(IdmError):
    """The transport went away before the operation completed."""

    code = CLOSED


class IdmTimeout(IdmError):
    """No answer within the caller's timeout."""

    code = TIMEOUT
