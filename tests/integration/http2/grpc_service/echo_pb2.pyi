from typing import ClassVar as _ClassVar

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message

DESCRIPTOR: _descriptor.FileDescriptor

class EchoRequest(_message.Message):
    __slots__ = ("count", "delay_ms", "message", "payload", "reply_size", "status_code")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REPLY_SIZE_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    count: int
    delay_ms: int
    status_code: int
    message: str
    reply_size: int
    def __init__(
        self,
        payload: bytes | None = ...,
        count: int | None = ...,
        delay_ms: int | None = ...,
        status_code: int | None = ...,
        message: str | None = ...,
        reply_size: int | None = ...,
    ) -> None: ...

class EchoReply(_message.Message):
    __slots__ = ("payload", "received", "server")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    server: str
    received: int
    def __init__(
        self,
        payload: bytes | None = ...,
        server: str | None = ...,
        received: int | None = ...,
    ) -> None: ...
