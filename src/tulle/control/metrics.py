"""The control plane's own metrics: plain counters, rendered as Prometheus text on scrape.

Counting is a field increment; formatting happens only when `/metrics` is read.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        # Not Linux: ru_maxrss (peak, in KiB) is the closest portable figure.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class ControlMetrics:
    """Counters and gauges of one control-plane process."""

    def __init__(self) -> None:
        self.started_at = time.time()
        self.reload_ok = 0
        self.reload_error = 0
        self.last_reload_ok_at = 0.0
        self.services = 0
        self.streams_opened = {"get": 0, "profile": 0}
        self.streams_active = {"get": 0, "profile": 0}
        self.updates_sent = {"get": 0, "profile": 0}
        self.stream_overflows = {"get": 0, "profile": 0}
        # Filled by the server so that the gauge reads the live value.
        self.publishers: Callable[[], int] = lambda: 0
        # More exposition text (the Identity service's counters), when it runs.
        self.extra: Callable[[], str] | None = None

    def render(self) -> str:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        lines = [
            "# HELP control_manifest_reload_total Manifest loads, by result.",
            "# TYPE control_manifest_reload_total counter",
            f'control_manifest_reload_total{{result="ok"}} {self.reload_ok}',
            f'control_manifest_reload_total{{result="error"}} {self.reload_error}',
            "# HELP control_manifest_last_reload_success_timestamp_seconds When the "
            "manifest in use was loaded.",
            "# TYPE control_manifest_last_reload_success_timestamp_seconds gauge",
            f"control_manifest_last_reload_success_timestamp_seconds {self.last_reload_ok_at:.3f}",
            "# HELP control_manifest_services Services in the manifest in use.",
            "# TYPE control_manifest_services gauge",
            f"control_manifest_services {self.services}",
            "# HELP control_destination_publishers Authorities currently watched.",
            "# TYPE control_destination_publishers gauge",
            f"control_destination_publishers {self.publishers()}",
        ]
        for name, kind, help_text, values in (
            ("control_destination_streams", "gauge", "Open streams.", self.streams_active),
            (
                "control_destination_streams_opened_total",
                "counter",
                "Streams opened.",
                self.streams_opened,
            ),
            (
                "control_destination_updates_total",
                "counter",
                "Messages sent on streams.",
                self.updates_sent,
            ),
            (
                "control_destination_stream_overflows_total",
                "counter",
                "Streams ended because the client read too slowly.",
                self.stream_overflows,
            ),
        ):
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f'{name}{{rpc="{rpc}"}} {value}' for rpc, value in values.items())
        lines += [
            "# HELP process_cpu_seconds_total User and system CPU time.",
            "# TYPE process_cpu_seconds_total counter",
            f"process_cpu_seconds_total {usage.ru_utime + usage.ru_stime:.3f}",
            "# HELP process_resident_memory_bytes Resident memory.",
            "# TYPE process_resident_memory_bytes gauge",
            f"process_resident_memory_bytes {_resident_bytes()}",
            "# HELP process_start_time_seconds When the process started.",
            "# TYPE process_start_time_seconds gauge",
            f"process_start_time_seconds {self.started_at:.3f}",
        ]
        text = "\n".join(lines) + "\n"
        if self.extra is not None:
            text += self.extra()
        return text
