"""AdmissionReview parsing and answers, and `tulle inject` on whole manifests (no sockets)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tulle.k8s.admission import ReviewError, allow, deny, json_patch, parse_review
from tulle.k8s.documents import Outcome, inject_document
from tulle.k8s.inject import PROXY_CONTAINER, InjectConfig, inject_pod

CONFIG = InjectConfig(image="tulle:test")


def apply_patch(document: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 `add` on object members, as the API server applies it (a copy)."""
    result = json.loads(json.dumps(document))
    for op in patch:
        assert op["op"] == "add"
        *parents, last = op["path"].lstrip("/").split("/")
        target = result
        for key in parents:
            target = target[key.replace("~1", "/").replace("~0", "~")]
        target[last.replace("~1", "/").replace("~0", "~")] = op["value"]
    return result


def review(obj: dict[str, Any], **request: Any) -> bytes:
    body = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": "shop",
            "object": obj,
            **request,
        },
    }
    return json.dumps(body).encode()


POD = {
    "metadata": {"generateName": "web-", "annotations": {"tulle.io/inject": "enabled"}},
    "spec": {"containers": [{"name": "web", "image": "app"}]},
}


def test_the_patch_applied_to_the_request_gives_the_injected_pod() -> None:
    request = parse_review(review(POD))
    assert (request.uid, request.kind, request.namespace) == ("u-1", "Pod", "shop")
    injected = inject_pod(request.obj, CONFIG, namespace=request.namespace).pod
    answer = json.loads(allow(request, json_patch(request.obj, injected)))
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["response"]["uid"] == "u-1" and answer["response"]["allowed"] is True
    assert answer["response"]["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(answer["response"]["patch"]))
    assert apply_patch(POD, patch) == injected


def test_a_pod_without_annotations_or_volumes_gets_add_operations() -> None:
    bare = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    injected = inject_pod(bare, CONFIG, explicit=True).pod
    patch = json_patch(bare, injected)
    assert {op["path"] for op in patch} == {
        "/metadata/annotations",
        "/spec/initContainers",
        "/spec/containers",
        "/spec/volumes",
        "/spec/serviceAccountName",  # what the ServiceAccount admission plugin would name
    }
    assert apply_patch(bare, patch) == injected


def test_no_patch_means_no_patch_type_and_deny_carries_the_message() -> None:
    request = parse_review(review(POD))
    answer = json.loads(allow(request, []))["response"]
    assert answer == {"uid": "u-1", "allowed": True}
    refused = json.loads(deny(request, "tulle injection: bad"))["response"]
    assert refused["allowed"] is False and refused["status"]["message"] == "tulle injection: bad"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"kind": "Pod", "apiVersion": "v1"}', "not an AdmissionReview"),
        (b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}', "without a request"),
        (
            b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {}}',
            "uid",
        ),
        (
            b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",'
            b' "request": {"uid": "x", "object": 3}}',
            "object",
        ),
    ],
)
def test_hostile_bodies_raise_review_error(body: bytes, says: str) -> None:
    with pytest.raises(ReviewError, match=says):
        parse_review(body)


def test_documents_of_every_kind_are_injected_and_others_pass_through() -> None:
    template = {"metadata": {"labels": {"app": "w"}}, "spec": POD["spec"]}
    documents: list[Any] = [
        {"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": template}},
        {"kind": "StatefulSet", "metadata": {"name": "s"}, "spec": {"template": template}},
        {"kind": "DaemonSet", "metadata": {"name": "ds"}, "spec": {"template": template}},
        {"kind": "Job", "metadata": {"name": "j"}, "spec": {"template": template}},
        {
            "kind": "CronJob",
            "metadata": {"name": "c"},
            "spec": {"jobTemplate": {"spec": {"template": template}}},
        },
        {"kind": "Pod", "metadata": {"name": "p"}, "spec": POD["spec"]},
        {
            "kind": "List",
            "items": [{"kind": "Pod", "metadata": {"name": "q"}, "spec": POD["spec"]}],
        },
        {"kind": "Service", "metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}},
    ]
    outcomes: list[Outcome] = []
    result = [inject_document(d, CONFIG, outcomes) for d in documents]
    assert [o.what for o in outcomes] == [
        "deployment/d",
        "statefulset/s",
        "daemonset/ds",
        "job/j",
        "cronjob/c",
        "pod/p",
        "pod/q",
    ]
    assert all(o.injected for o in outcomes)

    def containers(spec: dict[str, Any]) -> list[str]:
        return [c["name"] for c in spec["containers"]]

    assert containers(result[0]["spec"]["template"]["spec"])[0] == PROXY_CONTAINER
    cron = result[4]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert containers(cron)[0] == PROXY_CONTAINER
    assert containers(result[6]["items"][0]["spec"])[0] == PROXY_CONTAINER
    assert result[7] == documents[7]
    assert containers(documents[0]["spec"]["template"]["spec"]) == ["web"]  # input untouched
