"""A scrape target: a proxy's admin listener, and the names its figures go under.

Read by the metrics API (`tulle.viz`); made from `--scrape-targets`
(`tulle.viz.targets`) and from the Kubernetes source's meshed pods
(`tulle.control.kubernetes.pods`), which is why it lives below both.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class ScrapeTarget:
    service: str
    instance: str
    admin: str  # HOST:PORT of the proxy's admin listener
    # Kubernetes pods only (tulle.control.kubernetes.pods): the pod's namespace,
    # and the workload that owns it as KIND/NAME (`deploy/web`); the service is
    # then `<namespace>/<service>` and the instance the pod's name.
    namespace: str = ""
    workload: str = ""

    def to_json(self) -> dict[str, str]:
        document = {"service": self.service, "instance": self.instance, "admin": self.admin}
        if self.namespace:
            document.update(namespace=self.namespace, workload=self.workload)
        return document
