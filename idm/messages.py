"""IDM messages: the msgpack map inside a frame, its validation, and the frame+message codec.

A body is a map with short keys (docs/idm.md is the spec)::

    {"v": 1, "t": "req", "id": 7, "type": "ping", "p": {...}}        request
    {"v": 1, "t": "resp", "id": 7, "p": {...}}                       response to request 7
    {"v": 1, "t": "err", "id": 7, "p": {"code": ..., "message": ...}} error reply (id 0: not tied to a request)
    {"v": 1, "t": "event", "id": 42, "type": "container.exit", "p": {...}}   id = event sequence number
    {"v": 1, "t": "data", "id": 7, "ch": "stdout", "p": b"..."}     stream bytes (stream id = opening request id)
    {"v": 1, "t": "credit", "id": 7, "ch": "stdout", "p": 65536}    receiver grants more bytes on a channel
    {"v": 1, "t": "close", "id": 7, "ch": "stdin"}                  end of one channel
    {"v": 1, "t": "close", "id": 7, "p": {"exit_code": 0}}          end of the whole stream, with its result
"""

from __future__ import annotations

import msgpack

from idm.errors import (
    BAD_FRAME,
    BAD_MESSAGE,
    FRAME_TOO_LARGE,
    UNSUPPORTED_VERSION,
    FrameError,
    ProtocolError,
    SchemaError,
)
from idm.framing import DEFAULT_MAX_FRAME, HEADER, MAGIC, FrameDecoder

TYPE_CHECKING = False  # typing itself is not imported: it would cost PID 1 ~0.5 MB
if TYPE_CHECKING:
    from typing import Any

VERSION = 1
SUPPORTED_VERSIONS = (1,)

REQUEST = "req"
RESPONSE = "resp"
ERROR = "err"
EVENT = "event"
DATA = "data"
CREDIT = "credit"
CLOSE = "close"
KINDS = frozenset({REQUEST, RESPONSE, ERROR, EVENT, DATA, CREDIT, CLOSE})

MAX_ID = (1 << 63) - 1
MAX_CREDIT = 1 << 32
MAX_NAME = 128  # longest message type or channel name

# Bounds handed to msgpack so a 1 MiB body cannot expand into an unbounded object graph.
MAX_ARRAY_LEN = 1 << 16
MAX_MAP_LEN = 1 << 14


class Message:
    """One decoded message. ``type`` is set for requests and events, ``channel`` for stream messages.

    A plain slotted class (a value: equal when its fields are), not a dataclass: the zone's PID 1 loads this
    module at boot, and ``dataclasses`` compiles each class's methods from source at import."""

    __slots__ = ("channel", "id", "kind", "payload", "type", "version")

    def __init__(self, kind: str, id: int = 0, type: str = "", payload: Any = None,
                 channel: str = "", version: int = VERSION) -> None:
        self.kind, self.id, self.type, self.payload, self.channel, self.version = (
            kind, id, type, payload, channel, version)

    def _fields(self) -> tuple[Any, ...]:
        return self.kind, self.id, self.type, self.payload, self.channel, self.version

    def __eq__(self, other: object) -> bool:
        return self._fields() == other._fields() if isinstance(other, Message) else NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it was

    def __repr__(self) -> str:
        return (f"Message(kind={self.kind!r}, id={self.id!r}, type={self.type!r}, payload={self.payload!r}, "
                f"channel={self.channel!r}, version={self.version!r})")

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"v": self.version, "t": self.kind, "id": self.id}
        if self.type:
            body["type"] = self.type
        if self.channel:
            body["ch"] = self.channel
        if self.payload is not None:
            body["p"] = self.payload
        return body


def request(msg_id: int, type_: str, payload: Any = None) -> Message:
    return Message(REQUEST, msg_id, type_, payload)


def response(msg_id: int, payload: Any = None) -> Message:
    return Message(RESPONSE, msg_id, payload=payload)


def error(msg_id: int, code: str, message: str) -> Message:
    return Message(ERROR, msg_id, payload={"code": code, "message": message})


def event(seq: int, type_: str, payload: Any = None) -> Message:
    return Message(EVENT, seq, type_, payload)


def _plain(value: Any) -> Any:
    """msgpack fallback for values handlers may return: sets become lists, anything else its str()."""
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    return str(value)


def encode(message: Message, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """One complete frame for ``message``. Raises FrameError if it would exceed ``max_frame``."""
    try:
        body = msgpack.packb(message.to_wire(), use_bin_type=True, default=_plain)
    except (TypeError, ValueError, OverflowError) as e:
        raise SchemaError(f"cannot encode {message.kind} {message.type or message.id}: {e}") from e
    if len(body) > max_frame:
        raise FrameError(f"{message.kind} message of {len(body)} bytes exceeds the frame limit of {max_frame}",
                         FRAME_TOO_LARGE)
    return HEADER.pack(MAGIC, len(body)) + body


def unpack_body(body: bytes | bytearray) -> Any:
    """msgpack-decode one frame body with bounded container sizes; FrameError if it is not msgpack."""
    try:
        return msgpack.unpackb(
            body,
            raw=False,
            use_list=True,
            strict_map_key=False,
            max_array_len=MAX_ARRAY_LEN,
            max_map_len=MAX_MAP_LEN,
        )
    except Exception as e:  # msgpack raises several unrelated types (ValueError, ExtraData, StackError, ...)
        raise FrameError(f"undecodable frame body: {type(e).__name__}: {e}", BAD_FRAME) from None


def _int_field(body: dict, key: str, kind: str, msg_id: int, lo: int = 0, hi: int = MAX_ID) -> int:
    value = body.get(key, 0)
    if type(value) is not int or not lo <= value <= hi:
        raise SchemaError(f"{kind}: field {key!r} must be an integer in [{lo}, {hi}]", BAD_MESSAGE, msg_id, kind)
    return value


def _name_field(body: dict, key: str, kind: str, msg_id: int) -> str:
    value = body.get(key)
    if type(value) is not str or not 0 < len(value) <= MAX_NAME:
        raise SchemaError(f"{kind}: field {key!r} must be a non-empty string", BAD_MESSAGE, msg_id, kind)
    return value


def parse(body: Any) -> Message:
    """Validate a decoded body into a Message. Raises SchemaError naming the problem (and the id if known)."""
    # Fast path for well-formed current-version messages; anything unusual takes the careful path below.
    if type(body) is dict and body.get("v") == VERSION:
        msg_id = body.get("id", 0)
        kind = body.get("t")
        if type(msg_id) is int and 0 <= msg_id <= MAX_ID and type(body["v"]) is int:
            if kind in (REQUEST, EVENT):
                name = body.get("type")
                if type(name) is str and 0 < len(name) <= MAX_NAME:
                    return Message(kind, msg_id, name, body.get("p"))
            elif kind == DATA:
                channel = body.get("ch")
                payload = body.get("p")
                if type(channel) is str and 0 < len(channel) <= MAX_NAME and type(payload) is bytes:
                    return Message(kind, msg_id, "", payload, channel)
            elif kind == RESPONSE:
                return Message(kind, msg_id, "", body.get("p"))
    return _parse_checked(body)


def _parse_checked(body: Any) -> Message:
    if type(body) is not dict:
        raise SchemaError(f"message body must be a map, not {type(body).__name__}")
    raw_id = body.get("id", 0)
    msg_id = raw_id if type(raw_id) is int and 0 <= raw_id <= MAX_ID else 0
    raw_kind = body.get("t")
    kind = raw_kind if type(raw_kind) is str and raw_kind in KINDS else ""
    version = body.get("v")
    if type(version) is not int:
        raise SchemaError("message has no integer protocol version 'v'", BAD_MESSAGE, msg_id, kind)
    if version not in SUPPORTED_VERSIONS:
        raise SchemaError(
            f"protocol version {version} is not supported (supported: {', '.join(map(str, SUPPORTED_VERSIONS))})",
            UNSUPPORTED_VERSION, msg_id, kind,
        )
    if not kind:
        raise SchemaError(f"unknown message kind {raw_kind!r}", BAD_MESSAGE, msg_id)
    msg_id = _int_field(body, "id", kind, msg_id)
    payload = body.get("p")
    if kind in (REQUEST, EVENT):
        return Message(kind, msg_id, _name_field(body, "type", kind, msg_id), payload, version=version)
    if kind in (RESPONSE, ERROR):
        if kind == ERROR and not (
            type(payload) is dict and type(payload.get("code")) is str and type(payload.get("message")) is str
        ):
            raise SchemaError("error message needs a payload map with string 'code' and 'message'",
                              BAD_MESSAGE, msg_id, kind)
        return Message(kind, msg_id, payload=payload, version=version)
    # Stream messages: data, credit, close.
    channel = body.get("ch", "")
    if type(channel) is not str or len(channel) > MAX_NAME:
        raise SchemaError(f"{kind}: field 'ch' must be a string", BAD_MESSAGE, msg_id, kind)
    if kind == DATA:
        if not channel or type(payload) is not bytes:
            raise SchemaError("data message needs a channel and a binary payload", BAD_MESSAGE, msg_id, kind)
    elif kind == CREDIT and (not channel or type(payload) is not int or not 0 < payload <= MAX_CREDIT):
        raise SchemaError(f"credit message needs a channel and a grant in [1, {MAX_CREDIT}]",
                          BAD_MESSAGE, msg_id, kind)
    return Message(kind, msg_id, payload=payload, channel=channel, version=version)


class MessageDecoder:
    """Feed bytes, get ``Message`` objects and ``ProtocolError`` items (framing or schema), in stream order.

    Never raises on input; only the typed errors come back, as values, so a reader keeps its connection.
    """

    __slots__ = ("frames",)

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.frames = FrameDecoder(max_frame)

    def feed(self, data: bytes) -> list[Message | ProtocolError]:
        out: list[Message | ProtocolError] = []
        for item in self.frames.feed(data):
            if isinstance(item, FrameError):
                out.append(item)
                continue
            try:
                out.append(parse(unpack_body(item)))
            except ProtocolError as e:
                out.append(e)
        return out
