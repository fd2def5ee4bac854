"""1 GB through one hop, both ways, with the proxy's memory bounded: bodies
must stream, never be buffered whole."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from support.mesh import Proxy
from support.process import tree_rss_kib
from support.tools import CURL_TIMEOUT_S, require_binary

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ONE_GB = 1_000_000_000
RSS_LIMIT_KIB = 100 * 1024
TRANSFER_TIMEOUT_S = 120


class RssSampler:
    """Samples a process tree's RSS every 50 ms on a thread; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak_kib = max(self.peak_kib, tree_rss_kib(self.pid))
                self.samples += 1
            except OSError:
                return

    @contextmanager
    def running(self) -> Iterator[RssSampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=5)


def test_one_gigabyte_download_streams(one_hop: Proxy) -> None:
    curl = require_binary("curl")
    with RssSampler(one_hop.pid).running() as sampler:
        result = subprocess.run(
            [
                curl,
                "--silent",
                "--show-error",
                "--max-time",
                str(TRANSFER_TIMEOUT_S),
                "--proxy",
                one_hop.outbound_url,
                "--output",
                "/dev/null",
                "--write-out",
                "%{http_code} %{size_download}",
                f"http://books/bytes/{ONE_GB}",
            ],
            capture_output=True,
            text=True,
            timeout=TRANSFER_TIMEOUT_S + CURL_TIMEOUT_S,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"200 {ONE_GB}"
    assert sampler.samples > 0
    assert sampler.peak_kib < RSS_LIMIT_KIB, f"proxy RSS peaked at {sampler.peak_kib} KiB"


def test_one_gigabyte_chunked_upload_streams(one_hop: Proxy) -> None:
    curl = require_binary("curl")
    head = require_binary("head")
    with RssSampler(one_hop.pid).running() as sampler:
        source = subprocess.Popen(
            [head, "--bytes", str(ONE_GB), "/dev/zero"], stdout=subprocess.PIPE
        )
        try:
            # `-T -` reads stdin and, with no known length, sends it chunked.
            result = subprocess.run(
                [
                    curl,
                    "--silent",
                    "--show-error",
                    "--max-time",
                    str(TRANSFER_TIMEOUT_S),
                    "--proxy",
                    one_hop.outbound_url,
                    "-X",
                    "POST",
                    "-T",
                    "-",
                    "http://books/sink",
                ],
                stdin=source.stdout,
                capture_output=True,
                text=True,
                timeout=TRANSFER_TIMEOUT_S + CURL_TIMEOUT_S,
                check=False,
            )
        finally:
            if source.stdout is not None:
                source.stdout.close()
            source.kill()
            source.wait()
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["bytes"] == ONE_GB
    assert sampler.samples > 0
    assert sampler.peak_kib < RSS_LIMIT_KIB, f"proxy RSS peaked at {sampler.peak_kib} KiB"
