"""Tiny single-purpose TCP servers run on a thread inside a test, for
behaviours the demo backend does not have (a server that half-closes first)."""

from __future__ import annotations

import socket
import threading

from support.ports import LOOPBACK

ACCEPT_TIMEOUT_S = 10.0


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
