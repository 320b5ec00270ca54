"""containerd's ttrpc protocol (containerd/ttrpc PROTOCOL.md, as containerd 1.6 speaks it: unary calls).

`framing` (pure, no I/O) and `status` import nothing heavy; `server` and `client` bring in protobuf.
"""

from shim.ttrpc.framing import (
    FLAG_NO_DATA,
    FLAG_REMOTE_CLOSED,
    FLAG_REMOTE_OPEN,
    HEADER_SIZE,
    MAX_MESSAGE_LENGTH,
    Frame,
    FrameDecoder,
    FrameTooLarge,
    MessageType,
    encode_frame,
)
from shim.ttrpc.status import (
    AlreadyExists,
    Code,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    RpcError,
    Unavailable,
    Unimplemented,
)

__all__ = [
    "FLAG_NO_DATA", "FLAG_REMOTE_CLOSED", "FLAG_REMOTE_OPEN", "HEADER_SIZE", "MAX_MESSAGE_LENGTH",
    "AlreadyExists", "Code", "DeadlineExceeded", "FailedPrecondition", "Frame", "FrameDecoder", "FrameTooLarge",
    "Internal", "InvalidArgument", "MessageType", "NotFound", "ResourceExhausted", "RpcError", "Unavailable",
    "Unimplemented", "encode_frame",
]
