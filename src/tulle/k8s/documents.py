"""`tulle inject` on whole manifests: find every pod template and inject it (pure).

Kinds and where their pod is: Pod (itself); Deployment, StatefulSet,
DaemonSet, ReplicaSet, ReplicationController, Job (`spec.template`);
CronJob (`spec.jobTemplate.spec.template`); List (each of `items`). Anything
else passes through untouched, so `kubectl get all -o yaml | tulle inject -`
keeps Services and ConfigMaps as they were.

The pods go through the webhook's own `inject_pod`, as asked for
(`explicit`): only a pod's `tulle.io/inject: disabled`, a system namespace
or the control plane's own namespace stop it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tulle.k8s.inject import InjectConfig, inject_pod

Obj = dict[str, Any]

TEMPLATE_KINDS = frozenset(
    {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job"}
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One pod template seen: which object, and what was done."""

    what: str  # "deployment/web"
    injected: bool
    reason: str


def inject_document(document: object, config: InjectConfig, outcomes: list[Outcome]) -> object:
    """The document with every pod template in it injected; appends to `outcomes`.

    Raises InjectError (from `inject_pod`) for a pod that cannot be injected."""
    if not isinstance(document, dict):
        return document
    kind = document.get("kind")
    if kind == "List" and isinstance(document.get("items"), list):
        return {
            **document,
            "items": [inject_document(i, config, outcomes) for i in document["items"]],
        }
    metadata = document.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    name = f"{str(kind).lower()}/{metadata.get('name', '')}"
    namespace = str(metadata.get("namespace") or "")
    if kind == "Pod":
        result = inject_pod(document, config, namespace=namespace, explicit=True)
        outcomes.append(Outcome(name, result.decision.inject, result.decision.reason))
        return result.pod
    path: tuple[str, ...]
    if kind in TEMPLATE_KINDS:
        path = ("spec", "template")
    elif kind == "CronJob":
        path = ("spec", "jobTemplate", "spec", "template")
    else:
        return document
    template = _get(document, path)
    if not isinstance(template, dict):
        return document
    result = inject_pod(template, config, namespace=namespace, explicit=True)
    outcomes.append(Outcome(name, result.decision.inject, result.decision.reason))
    return _set(document, path, result.pod)


def _get(obj: Obj, path: tuple[str, ...]) -> object:
    value: object = obj
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _set(obj: Obj, path: tuple[str, ...], value: object) -> Obj:
    """A copy of `obj` with `value` at `path` (the path exists: `_get` found it)."""
    if not path:
        assert isinstance(value, dict)
        return value
    inner = obj[path[0]]
    assert isinstance(inner, dict)
    return {**obj, path[0]: _set(inner, path[1:], value)}
