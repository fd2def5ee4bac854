from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class EchoRequest(_message.Message):
    __slots__ = ("payload", "count", "delay_ms", "status_code", "message", "reply_size")
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
    def __init__(self, payload: _Optional[bytes] = ..., count: _Optional[int] = ..., delay_ms: _Optional[int] = ..., status_code: _Optional[int] = ..., message: _Optional[str] = ..., reply_size: _Optional[int] = ...) -> None: ...

class EchoReply(_message.Message):
    __slots__ = ("payload", "server", "received")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    server: str
    received: int
    def __init__(self, payload: _Optional[bytes] = ..., server: _Optional[str] = ..., received: _Optional[int] = ...) -> None: ...
