"""gRPC status codes as ttrpc carries them (Response.status, wire-identical to google.rpc.Status).

containerd turns a code back into its own error kinds (errdefs.FromGRPC): NotFound, AlreadyExists,
InvalidArgument, FailedPrecondition, Unavailable, NotImplemented (Unimplemented), ...; its CRI plugin acts
on them (a Kill answered NotFound means "already gone"), so a handler raises the precise one.
"""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @classmethod
    def from_wire(cls, value: int) -> Code:
        """A code received from a peer; an unknown number becomes UNKNOWN (as gRPC does)."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


class RpcError(Exception):
    """A call failed with a status code: raised by handlers (sent to the peer) and by the client (received)."""

    code: Code = Code.UNKNOWN

    def __init__(self, message: str, code: Code | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code.name.lower()}: {self.message}"


class InvalidArgument(RpcError):
    code = Code.INVALID_ARGUMENT


class NotFound(RpcError):
    code = Code.NOT_FOUND


class AlreadyExists(RpcError):
    code = Code.ALREADY_EXISTS


class FailedPrecondition(RpcError):
    code = Code.FAILED_PRECONDITION


class ResourceExhausted(RpcError):
    code = Code.RESOURCE_EXHAUSTED


class Unimplemented(RpcError):
    code = Code.UNIMPLEMENTED


class Internal(RpcError):
    code = Code.INTERNAL


class Unavailable(RpcError):
    code = Code.UNAVAILABLE


class DeadlineExceeded(RpcError):
    code = Code.DEADLINE_EXCEEDED
