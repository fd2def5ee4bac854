"""A FAKE proxy admin for tap tests: the real `TapHub` + `serve_tap` behind a tiny listener.

Until the proxy's admin serves `GET /tap`, this stands in for it so that the
control plane's relay and `tulle tap` are tested over real sockets. It runs in
a thread of the test process, answers `/metrics` with an empty page, and
emits one synthetic event every 20 ms while someone listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from urllib.parse import parse_qsl, urlsplit

from tulle.proxy.tap import TapEvent, TapHub, serve_tap

LOOPBACK = "127.0.0.1"
EMIT_INTERVAL_S = 0.02


class FakeTapServer:
    def __init__(self) -> None:
        self.hub = TapHub()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._run, name="fake-tap", daemon=True)

    @property
    def admin(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> FakeTapServer:
        self._thread.start()
        if not self._ready.wait(5.0):
            raise TimeoutError("the fake tap server did not start")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5.0)

    def _run(self) -> None:
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, LOOPBACK, 0)
        self.port = server.sockets[0].getsockname()[1]
        emitter = asyncio.create_task(self._emit())
        self._ready.set()
        await self._stop.wait()
        emitter.cancel()
        server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(emitter, *self._handlers, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1.0)

    async def _emit(self) -> None:
        count = 0
        while True:
            await asyncio.sleep(EMIT_INTERVAL_S)
            if not self.hub.active:
                continue
            count += 1
            self.hub.emit(
                TapEvent(
                    ts=time.time(),
                    direction="inbound",
                    method="GET" if count % 2 else "POST",
                    authority="books:8080",
                    path=f"/items/{count % 3}",
                    status=500 if count % 5 == 0 else 200,
                    latency_ms=1.5,
                    src="127.0.0.1:50000",
                    dst="127.0.0.1:8080",
                    tls=True,
                    client_id="spiffe://tulle.local/ns/default/sa/web",
                    dst_service="books",
                )
            )

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            target = head.split(b"\r\n", 1)[0].split()[1].decode()
            split = urlsplit(target)
            if split.path == "/tap":
                query = dict(parse_qsl(split.query))
                await serve_tap(self.hub, query, writer.write, writer.is_closing)
            else:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, IndexError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
