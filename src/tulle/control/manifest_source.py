"""The manifest file as a live source: poll it, validate each edit, keep the last good one.

Polling (every 200 ms by default) rather than inotify keeps this dependency-free
and portable, and also sees edits made through atomic renames and bind mounts.
Each poll reads the file and compares a hash, which costs microseconds for a
manifest of a few hundred services and catches edits that keep size and mtime.
Parsing runs in a worker thread so that a large edit never stalls the streams.
A broken edit is refused: it is logged once with every problem found, counted
as `control_manifest_reload_total{result="error"}`, and the last good manifest
keeps being served.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from tulle.control.manifest import Manifest, ManifestError, Problem, parse_manifest
from tulle.control.metrics import ControlMetrics

log = logging.getLogger("tulle.control.manifest")

DEFAULT_POLL_INTERVAL_S = 0.2


class ManifestFileSource:
    def __init__(
        self,
        path: str | Path,
        on_change: Callable[[Manifest], None],
        metrics: ControlMetrics,
        *,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    ) -> None:
        self.path = Path(path)
        self._source_name = str(path)
        self._on_change = on_change
        self._metrics = metrics
        self._poll_interval_s = poll_interval_s
        # The digest of the last content looked at, good or bad, so that each
        # distinct edit is parsed, logged and counted once.
        self._seen_digest: bytes | None = None
        self._last_error: str | None = None

    def load_initial(self) -> Manifest:
        """Load the manifest synchronously at start-up; raises ManifestError."""
        data = self._read()
        self._seen_digest = hashlib.sha256(data).digest()
        try:
            manifest = parse_manifest(data, source=self._source_name)
        except ManifestError:
            self._metrics.reload_error += 1
            raise
        self._accepted(manifest)
        return manifest

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(self._poll_interval_s)
            await self.poll_once()

    async def poll_once(self) -> bool:
        """Look at the file once; True when a new manifest was accepted."""
        try:
            data = self._read()
        except ManifestError as exc:
            self._refuse(str(exc), digest=None)
            return False
        digest = hashlib.sha256(data).digest()
        if digest == self._seen_digest:
            return False
        self._seen_digest = digest
        try:
            manifest = await asyncio.to_thread(parse_manifest, data, source=self._source_name)
        except ManifestError as exc:
            self._refuse(str(exc), digest=digest)
            return False
        self._accepted(manifest)
        self._on_change(manifest)
        return True

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            problem = Problem(self._source_name, None, "", f"cannot read the file: {reason}")
            raise ManifestError([problem]) from None

    def _accepted(self, manifest: Manifest) -> None:
        self._metrics.reload_ok += 1
        self._metrics.last_reload_ok_at = time.time()
        self._metrics.services = len(manifest.services)
        if self._last_error is not None:
            log.info("manifest %s is valid again", self._source_name)
        self._last_error = None
        log.info("loaded manifest %s: %d services", self._source_name, len(manifest.services))

    def _refuse(self, message: str, *, digest: bytes | None) -> None:
        if digest is None and message == self._last_error:
            return  # the same unreadable file, polled again
        self._last_error = message
        self._metrics.reload_error += 1
        log.error("refused manifest edit, keeping the last good state:\n%s", message)
