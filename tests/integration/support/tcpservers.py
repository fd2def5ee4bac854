"""Tiny single-purpose TCP servers run on a thread inside a test, for
behaviours the demo backend does not have (a server that half-closes first,
an HTTP upstream that dies partway through its responses)."""

from __future__ import annotations

import abc
import fcntl
import socket
import struct
import threading
import time

from support.ports import LOOPBACK

ACCEPT_TIMEOUT_S = 10.0
# Linux's SIOCOUTQ: bytes in a socket's send queue not yet acknowledged by the peer.
_SIOCOUTQ = 0x5411


def arm_reset(connection: socket.socket, timeout_s: float = 5.0) -> None:
    """Make closing `connection` send a TCP RST (SO_LINGER 0), as a crashed peer does,
    once what was sent has reached the peer: a reset discards unsent data, and a
    test of "part of a body, then a reset" must deliver the part."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        unacked = struct.unpack("i", fcntl.ioctl(connection, _SIOCOUTQ, b"\0\0\0\0"))[0]
        if unacked == 0:
            break
        time.sleep(0.001)
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class ServerHalfCloseFirst:
    """Accepts one connection, sends `greeting`, shuts its write side, then
    reads until the client's EOF and remembers how many bytes came."""

    def __init__(self, greeting: bytes) -> None:
        self.greeting = greeting
        self.received = bytearray()
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(ACCEPT_TIMEOUT_S)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def addr(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def _serve(self) -> None:
        try:
            connection, _ = self._listener.accept()
            with connection:
                connection.settimeout(ACCEPT_TIMEOUT_S)
                connection.sendall(self.greeting)
                connection.shutdown(socket.SHUT_WR)
                while chunk := connection.recv(65536):
                    self.received += chunk
        except BaseException as error:  # reported to the test through `error`
            self.error = error
        finally:
            self.done.set()

    def close(self) -> None:
        self._listener.close()
        self._thread.join(timeout=ACCEPT_TIMEOUT_S)


class ConnectionServer(abc.ABC):
    """Accepts connections on a thread until `close()`, handing each to `answer`
    (overridden) with a timeout set; a connection that fails with OSError is
    dropped and the next one accepted."""

    def __init__(self) -> None:
        self._stopped = threading.Event()
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def addr(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @abc.abstractmethod
    def answer(self, connection: socket.socket) -> None:
        """Serve one accepted connection; it is closed on return."""

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with connection:
                connection.settimeout(ACCEPT_TIMEOUT_S)
                try:
                    self.answer(connection)
                except OSError:
                    continue

    def close(self) -> None:
        self._stopped.set()
        self._listener.close()
        self._thread.join(timeout=ACCEPT_TIMEOUT_S)


class CutShortHttpServer(ConnectionServer):
    """An HTTP/1 upstream that dies partway through every response.

    For each connection (any number, until `close()`): reads one request
    head, sends `response` (a head and part of a body), then ends the
    connection with a TCP RST (`reset=True`: SO_LINGER 0, as a crashed or
    killed peer does) or a plain FIN. Counts the requests it answered.
    """

    def __init__(self, response: bytes, *, reset: bool) -> None:
        self.response = response
        self.reset = reset
        self.answered = 0
        super().__init__()

    def answer(self, connection: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = connection.recv(65536)
            if not chunk:
                break
            head += chunk
        if b"\r\n\r\n" not in head:
            return
        connection.sendall(self.response)
        self.answered += 1
        if self.reset:
            arm_reset(connection)
