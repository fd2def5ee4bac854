"""The `tulle check --kubernetes` runner (kept apart so `tulle check` imports no httpx)."""

from __future__ import annotations

import asyncio

from tulle.control.kubernetes.check import kubernetes_checks
from tulle.control.kubernetes.client import KubeClient, KubeConfig, KubeError
from tulle.core.checks import CheckReport


def run_kubernetes_checks(kubeconfig: str | None, namespace: str) -> CheckReport:
    try:
        config = KubeConfig.load(kubeconfig)
    except KubeError as exc:
        report = CheckReport()
        report.category("kubernetes API").add(
            "can reach the API server", False, str(exc), "pass --kubeconfig or set KUBECONFIG"
        )
        return report

    async def run() -> CheckReport:
        client = KubeClient(config)
        try:
            return await kubernetes_checks(client, namespace)
        finally:
            await client.aclose()

    return asyncio.run(run())
