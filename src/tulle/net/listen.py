"""Listening sockets, accepting, and protocol detection by peeking.

Detection peeks (`MSG_PEEK`) at the first bytes instead of reading them, so
that the connection can then be handed to a plain transport, to a TLS
transport (`ssl=` on `connect_accepted_socket`) or to an opaque forwarder with
no bytes consumed and none to replay. The cost is a per-connection one (an
epoll registration and a peek), never a per-request one.

Server-speaks-first protocols: a client that sends nothing within the detect
timeout is handed over as opaque (see `tulle.codec.detect`). Where opaque has
nowhere to go (an outbound connection that was not captured, so it has no
original destination), the proxy waits longer for the first bytes instead
(`first_bytes`): a client slowed by a busy machine is not a banner protocol.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
from collections.abc import Callable

from tulle.codec.detect import Kind, detect
from tulle.core.discovery import Address
from tulle.net.descriptors import DescriptorBudget

log = logging.getLogger(__name__)

SO_ORIGINAL_DST = 80
IP6T_SO_ORIGINAL_DST = 80  # on SOL_IPV6 (linux/netfilter_ipv6/ip6_tables.h)
PEEK_BYTES = 1024
# While a peek shows only a prefix (e.g. b"GE"), poll again this often.
REPEEK_INTERVAL_S = 0.005
# How long a connection with nowhere to go as opaque may take to send its
# first bytes (Linkerd's detect timeout).
FIRST_BYTES_TIMEOUT_S = 10.0

OnDetected = Callable[[socket.socket, Address, Kind, bytes], None]


def bind(addr: Address, *, reuse_port: bool, backlog: int = 1024) -> socket.socket:
    """A non-blocking listening socket; SO_REUSEPORT lets worker processes share it."""
    host, port = addr
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def is_local_address(ip: str) -> bool:
    """True if `ip` is an address of this host (so a connection to it stays here).

    The kernel answers: binding a socket to an address succeeds only for a
    local one (every 127.x.x.x, the interfaces' addresses, the wildcards).
    One syscall pair; callers cache the answer per destination.
    """
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((ip, 0))
    except OSError:
        return False
    return True


def original_dst(sock: socket.socket) -> Address | None:
    """Where an iptables-REDIRECTed connection was going; None if not redirected.

    IPv4 asks `SOL_IP`/`SO_ORIGINAL_DST` (a `sockaddr_in`), IPv6
    `SOL_IPV6`/`IP6T_SO_ORIGINAL_DST` (the same number, a `sockaddr_in6`). An
    IPv6 listener also accepts IPv4 connections (as `::ffff:a.b.c.d`), whose
    redirect is IPv4's: both are asked there. Once per connection.
    """
    dst: Address | None = None
    if sock.family == socket.AF_INET6:
        try:
            raw = sock.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, 28)
        except OSError:
            pass
        else:
            port, packed = struct.unpack_from("!2xH4x16s", raw)
            dst = (socket.inet_ntop(socket.AF_INET6, packed), port)
    if dst is None:
        try:
            raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
        except OSError:
            return None
        port, packed = struct.unpack_from("!2xH4s", raw)
        dst = (socket.inet_ntoa(packed), port)
    local = sock.getsockname()
    if dst[1] == local[1] and _same_ip(dst[0], local[0]):
        return None
    return dst


def _same_ip(a: str, b: str) -> bool:
    if a == b:
        return True
    mapped = "::ffff:"
    return a.removeprefix(mapped) == b.removeprefix(mapped)


class Acceptor:
    """Accepts on one listening socket and calls `on_detected` once the first
    bytes of each connection are known (or the detect timeout passed)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        on_detected: OnDetected,
        *,
        detect_timeout_s: float,
        on_accept: Callable[[], None] | None = None,
        budget: DescriptorBudget | None = None,
        on_shed: Callable[[], None] | None = None,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._on_detected = on_detected
        self._on_accept = on_accept
        self._detect_timeout = detect_timeout_s
        self._pending: dict[int, tuple[socket.socket, Address, asyncio.TimerHandle]] = {}
        self.closed = False
        # Descriptors running out: connections past the budget are shed (see
        # tulle.net.descriptors), each reported to `on_shed`.
        self._budget = budget
        self._on_shed = on_shed
        # Since when accept() has been failing for want of resources (0: it is not).
        self.paused_since = 0.0
        name = sock.getsockname()
        self._address: Address = (name[0], name[1])
        loop.add_reader(sock.fileno(), self._accept_ready)

    @property
    def address(self) -> Address:
        return self._address

    def close(self) -> None:
        """Stop accepting (connections already accepted carry on)."""
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    def _accept_ready(self) -> None:
        budget = self._budget
        for _ in range(64):  # bounded so one busy listener cannot starve the loop
            try:
                conn, peer = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                self.paused_since = 0.0  # accept() works: nothing is waiting
                return
            except OSError as exc:
                # No descriptor even to accept: close the waiting connection
                # with the spare one rather than leave it hanging.
                if (
                    exc.errno in (errno.EMFILE, errno.ENFILE)
                    and budget is not None
                    and budget.shed_waiting(self._sock)
                ):
                    self._shed()
                    continue
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._pause(exc)
                    return
                if exc.errno == errno.EBADF:
                    return
                continue
            if budget is not None and not budget.accept_ok(conn.fileno()):
                conn.close()
                self._shed()
                continue
            conn.setblocking(False)
            if conn.family != socket.AF_UNIX:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._on_accept is not None:
                self._on_accept()
            self.paused_since = 0.0
            self._start_detect(conn, (peer[0], peer[1]))

    def _shed(self) -> None:
        if self._budget is not None:
            self._budget.note_shed("connections")
        if self._on_shed is not None:
            self._on_shed()

    def _pause(self, exc: OSError) -> None:
        """Accepting fails for want of resources: retry in 100 ms (logged once a pause)."""
        if not self.paused_since:
            self.paused_since = self._loop.time()
            log.warning("accept failed: %s; pausing accepts, retrying every 100 ms", exc)
        self._loop.remove_reader(self._sock.fileno())
        self._loop.call_later(0.1, self._resume_accept)

    def _resume_accept(self) -> None:
        if not self.closed:
            self._loop.add_reader(self._sock.fileno(), self._accept_ready)
            # Try at once: with nobody waiting, this is what clears `paused_since`.
            self._accept_ready()

    def _start_detect(self, conn: socket.socket, peer: Address) -> None:
        fd = conn.fileno()
        timer = self._loop.call_later(self._detect_timeout, self._detect_timed_out, fd)
        self._pending[fd] = (conn, peer, timer)
        self._loop.add_reader(fd, self._peek, fd)

    def _peek(self, fd: int) -> None:
        entry = self._pending.get(fd)
        if entry is None:
            return
        conn, peer, _timer = entry
        try:
            data = conn.recv(PEEK_BYTES, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(fd)
            conn.close()
            return
        if not data:  # closed before sending anything
            self._drop(fd)
            conn.close()
            return
        kind = detect(data)
        if kind is Kind.NEED_MORE:
            # Level-triggered readiness would spin on unread bytes: poll instead.
            self._loop.remove_reader(fd)
            self._loop.call_later(REPEEK_INTERVAL_S, self._repeek, fd, len(data))
            return
        self._drop(fd)
        self._on_detected(conn, peer, kind, data)

    def _repeek(self, fd: int, seen: int) -> None:
        entry = self._pending.get(fd)
        if entry is None:
            return
        conn = entry[0]
        try:
            data = conn.recv(PEEK_BYTES, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            data = b""
        except OSError:
            self._drop(fd)
            conn.close()
            return
        if len(data) > seen or (data == b"" and seen == 0):
            self._loop.add_reader(fd, self._peek, fd)
        else:
            self._loop.call_later(REPEEK_INTERVAL_S, self._repeek, fd, seen)

    def _detect_timed_out(self, fd: int) -> None:
        entry = self._pending.get(fd)
        if entry is None:
            return
        conn, peer, _ = entry
        try:
            data = conn.recv(PEEK_BYTES, socket.MSG_PEEK)
        except OSError:
            data = b""
        self._drop(fd, cancel_timer=False)
        kind = detect(data) if data else Kind.OPAQUE
        if kind is Kind.NEED_MORE:
            kind = Kind.OPAQUE
        self._on_detected(conn, peer, kind, data)

    def _drop(self, fd: int, cancel_timer: bool = True) -> None:
        entry = self._pending.pop(fd, None)
        if entry is None:
            return
        self._loop.remove_reader(fd)
        if cancel_timer:
            entry[2].cancel()

    def close_pending(self) -> None:
        for fd in list(self._pending):
            conn = self._pending[fd][0]
            self._drop(fd)
            conn.close()


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def first_bytes(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, timeout_s: float
) -> bytes:
    """Peek at `sock` until its first bytes are enough to detect a protocol,
    the peer closes (b""), or `timeout_s` passes (what has come so far)."""
    deadline = loop.time() + timeout_s
    fd = sock.fileno()
    data = b""
    while True:
        try:
            data = sock.recv(PEEK_BYTES, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            return b""
        else:
            if not data:  # closed before sending enough
                return b""
            if len(data) >= PEEK_BYTES or detect(data) is not Kind.NEED_MORE:
                return data
        remaining = deadline - loop.time()
        if remaining <= 0:
            return data
        if data:
            # A prefix is unread: readiness is level-triggered, so poll.
            await asyncio.sleep(min(REPEEK_INTERVAL_S, remaining))
            continue
        readable: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _set_once, readable)
        try:
            await asyncio.wait_for(readable, remaining)
        except TimeoutError:
            pass
        finally:
            loop.remove_reader(fd)


def set_nodelay(sock: socket.socket | None) -> None:
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
