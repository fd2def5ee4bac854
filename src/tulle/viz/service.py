"""The metrics API as a part of `tulle control`: targets, scraper (or Prometheus) and server.

`tulle control` hands `VizService.for_control_plane` to the `ControlPlane`,
which creates one `VizService`, starts it after its other listeners and stops
it first. Keeping the wiring here keeps the control plane's own package
unaware of scraping, Prometheus and tap (and free of imports of `tulle.viz`,
which reads the control plane's manifest).

Targets are those of `--scrape-targets` plus, when given, `discovered()`'s
(the Kubernetes source's meshed pods), whose samples `relabel` rewrites.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from tulle.codec.promtext import Sample
from tulle.control.manifest import Manifest
from tulle.core.scrape import ScrapeTarget
from tulle.viz.api import ApiServer
from tulle.viz.api_context import ApiContext, MetricsSource, StoreSource
from tulle.viz.prometheus import PrometheusSource
from tulle.viz.scraper import DEFAULT_SCRAPE_INTERVAL_S, Scraper
from tulle.viz.targets import GivenUp, TargetSource
from tulle.viz.window import WindowStore

if TYPE_CHECKING:
    from tulle.control.server import ControlPlane


class VizService:
    def __init__(
        self,
        *,
        scrape_targets: str,
        prometheus_url: str,
        manifest_path: Path | None,
        manifest: Callable[[], Manifest | None],
        ready: Callable[[], bool],
        scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S,
        api_token: str = "",
        allowed_hosts: tuple[str, ...] = (),
        proxy_admin_token: str = "",
        traces_url: str = "",
        discovered: Callable[[], list[ScrapeTarget]] | None = None,
        relabel: Callable[[ScrapeTarget, list[Sample]], list[Sample]] | None = None,
    ) -> None:
        # Raises TargetError / ValueError on a bad flag: the replica refuses to start.
        self.targets = TargetSource(scrape_targets)
        self._discovered = discovered
        self.store = WindowStore()
        self.scraper: Scraper | None = None
        source: MetricsSource
        if prometheus_url:
            source = PrometheusSource(prometheus_url, self.targets.current())
            name = "prometheus"
        else:
            self.scraper = Scraper(
                self._targets, self.store, interval_s=scrape_interval_s, relabel=relabel
            )
            source = StoreSource(self.store)
            name = "scrape"
        self.server = ApiServer(
            ApiContext(
                targets=self._targets,
                source=source,
                ready=ready,
                manifest=manifest,
                manifest_path=manifest_path,
                source_name=name,
                target_error=lambda: self.targets.error,
                given_up=self._given_up,
                api_token=api_token,
                allowed_hosts=allowed_hosts,
                proxy_admin_token=proxy_admin_token,
                traces_url=traces_url,
            )
        )
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_control_plane(cls, plane: ControlPlane) -> VizService:
        """The metrics API of one replica (`tulle.control.server.HttpApiFactory`)."""
        config = plane.config
        return cls(
            scrape_targets=config.scrape_targets,
            prometheus_url=config.prometheus_url,
            # No file to check or write when the cluster is the source.
            manifest_path=config.manifest if config.source != "kubernetes" else None,
            manifest=lambda: plane.watcher.manifest,
            ready=plane.ready,
            scrape_interval_s=config.scrape_interval_s,
            api_token=config.api_token,
            allowed_hosts=config.api_allowed_hosts,
            proxy_admin_token=config.proxy_admin_token,
            traces_url=config.traces_url,
            # The meshed pods' proxies, once the Kubernetes source runs.
            discovered=partial(_pod_targets, plane) if config.source == "kubernetes" else None,
            relabel=partial(_relabel, plane) if config.source == "kubernetes" else None,
        )

    def _targets(self) -> list[ScrapeTarget]:
        if self._discovered is None:
            return self.targets.current()
        return sorted(set(self.targets.current()) | set(self._discovered()))

    def _given_up(self) -> list[GivenUp]:
        self.targets.current()  # re-reads the file when it changed
        return self.targets.given_up

    async def start(self, host: str, port: int) -> tuple[str, int]:
        address = await self.server.start(host, port)
        if self.scraper is not None:
            self._task = asyncio.create_task(self.scraper.run(), name="metrics-scraper")
        return address

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.server.close()


def _pod_targets(plane: ControlPlane) -> list[ScrapeTarget]:
    kube = plane.kubernetes
    return kube.proxy_targets() if kube is not None else []


def _relabel(plane: ControlPlane, target: ScrapeTarget, samples: list[Sample]) -> list[Sample]:
    kube = plane.kubernetes
    return kube.names.relabel(target, samples) if kube is not None else samples
