"""AdmissionReview in, AdmissionReview out: the webhook's protocol, as data (pure).

The API server POSTs an `admission.k8s.io/v1` AdmissionReview whose
`request.object` is the Pod being created; the answer is the same kind with
`response.uid` echoing the request's, `allowed`, and for a mutation a
base64 JSONPatch (RFC 6902). The patch adds or replaces whole members
(`initContainers`, `containers`, `volumes`, `annotations`): JSON Patch's
`add` replaces an existing member, and the API server applies the patch to
the very object it sent, so there is no index to get wrong.

Every byte comes from the network: `parse_review` checks the shape and
raises ReviewError with a message that says what is wrong; the server
answers it with 400, never a traceback.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]

API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
# Members of a pod that injection may change, as JSON Pointers.
PATCHED = (
    ("metadata", "annotations"),
    ("spec", "initContainers"),
    ("spec", "containers"),
    ("spec", "volumes"),
    ("spec", "serviceAccountName"),
)


class ReviewError(ValueError):
    """The body is not an AdmissionReview Tulle can answer."""


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    api_version: str
    uid: str
    kind: str  # the object's kind ("Pod")
    operation: str
    namespace: str
    obj: Obj


def parse_review(body: bytes) -> AdmissionRequest:
    try:
        review = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ReviewError(f"not JSON: {exc}") from None
    if not isinstance(review, dict):
        raise ReviewError("not an AdmissionReview: expected a JSON object")
    api_version = review.get("apiVersion")
    if review.get("kind") != "AdmissionReview" or api_version not in API_VERSIONS:
        raise ReviewError(
            f"not an AdmissionReview of {' or '.join(API_VERSIONS)} "
            f"(kind {review.get('kind')!r}, apiVersion {api_version!r})"
        )
    request = review.get("request")
    if not isinstance(request, dict):
        raise ReviewError("AdmissionReview without a request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ReviewError("AdmissionReview request without a uid")
    kind = request.get("kind")
    kind_name = kind.get("kind") if isinstance(kind, dict) else None
    obj = request.get("object")
    if not isinstance(obj, dict):
        raise ReviewError("AdmissionReview request without an object")
    namespace = request.get("namespace") or _nested(obj, "metadata", "namespace") or ""
    if not isinstance(namespace, str):
        raise ReviewError("AdmissionReview request: namespace is not a string")
    operation = request.get("operation")
    return AdmissionRequest(
        api_version=str(api_version),
        uid=uid,
        kind=kind_name if isinstance(kind_name, str) else "",
        operation=operation if isinstance(operation, str) else "",
        namespace=namespace,
        obj=obj,
    )


def _nested(obj: Mapping[str, Any], *keys: str) -> object:
    value: object = obj
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def json_patch(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Obj]:
    """`add` for each member of PATCHED that injection changed."""
    patch: list[Obj] = []
    for parent, member in PATCHED:
        old = _nested(before, parent, member)
        new = _nested(after, parent, member)
        if new is None or new == old:
            continue
        patch.append({"op": "add", "path": f"/{parent}/{member}", "value": new})
    return patch


def _envelope(request: AdmissionRequest, response: Obj) -> bytes:
    review = {
        "apiVersion": request.api_version,
        "kind": "AdmissionReview",
        "response": {"uid": request.uid, **response},
    }
    return json.dumps(review, separators=(",", ":")).encode()


def allow(request: AdmissionRequest, patch: list[Obj], warnings: Sequence[str] = ()) -> bytes:
    """Allowed, with the patch when there is one."""
    response: Obj = {"allowed": True}
    if patch:
        encoded = json.dumps(patch, separators=(",", ":")).encode()
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(encoded).decode()
    if warnings:
        response["warnings"] = list(warnings)
    return _envelope(request, response)


def deny(request: AdmissionRequest, message: str, code: int = 400) -> bytes:
    """Refused with `message`, which kubectl shows the user."""
    return _envelope(
        request,
        {"allowed": False, "status": {"code": code, "message": message, "reason": "BadRequest"}},
    )
