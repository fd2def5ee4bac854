"""The Kubernetes source's rebuild loop, without an API server."""

from __future__ import annotations

import asyncio

import pytest

from tulle.control.kubernetes import source as source_module
from tulle.control.kubernetes.source import KubernetesSource
from tulle.control.manifest import Manifest
from tulle.control.metrics import ControlMetrics


def test_a_failing_rebuild_keeps_the_last_model_and_the_loop_alive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    published: list[Manifest] = []
    metrics = ControlMetrics()
    real_translate = source_module.translate
    calls = 0

    def flaky(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise TypeError("an object nobody foresaw")
        return real_translate(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(source_module, "translate", flaky)

    async def scenario() -> None:
        kube = KubernetesSource(None, published.append, metrics, batch_s=0.0)  # type: ignore[arg-type]
        task = asyncio.create_task(kube.run())
        kube._mark()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if calls == 1:
                break
        assert published == [] and metrics.reload_error == 1
        kube._mark()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if published:
                break
        task.cancel()

    asyncio.run(scenario())
    assert len(published) == 1 and published[0].source == "kubernetes"
