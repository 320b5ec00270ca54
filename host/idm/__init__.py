"""Host end of IDM: connect to a zone's IDM channel (the protocol core is shared from zoneinit.idm)."""

from host.idm.client import (
    ClientStream,
    ConnectionClosed,
    Event,
    ExecSession,
    IdmClient,
    IdmError,
    IdmTimeout,
    RemoteError,
    connect,
    connect_transport,
    from_fds,
)

__all__ = [
    "ClientStream",
    "ConnectionClosed",
    "Event",
    "ExecSession",
    "IdmClient",
    "IdmError",
    "IdmTimeout",
    "RemoteError",
    "connect",
    "connect_transport",
    "from_fds",
]
