"""Property tests: the manifest parser only ever raises ManifestError, and any
sequence of manifest states, translated and applied by the client, converges."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tulle.api.destination_client import apply_update
from tulle.api.proto import destination_pb2 as pb
from tulle.control.destination.translator import EndpointTranslator, UpdateQueue
from tulle.control.destination.watcher import DestinationWatcher
from tulle.control.manifest import Manifest, ManifestError, parse_manifest
from tulle.core.discovery import ServiceView

_WORDS = st.sampled_from(
    [
        "services:",
        "  - name: web",
        "    port: 80",
        "    port: x",
        "    endpoints: [127.0.0.1:1]",
        "    endpoints:",
        "      - 1.2.3.4:5",
        "      - {address: 1.2.3.4:6, weight: 3}",
        "    routes:",
        "      - name: r",
        "        timeout: 1s",
        "        matches: [{path: {value: /a}}]",
        "    backends: [{name: web, weight: 1}]",
        "policy: {}",
        "  - [",
        "- ]",
        ": :",
        "\t",
        "&a *a",
        "!!binary x",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_WORDS, max_size=12))
def test_the_parser_never_raises_anything_but_manifest_errors(lines: list[str]) -> None:
    try:
        parse_manifest("\n".join(lines))
    except ManifestError as exc:
        assert exc.problems
        assert all(str(problem).startswith("mesh.yaml") for problem in exc.problems)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_gives_a_manifest_or_a_manifest_error(text: str) -> None:
    try:
        parse_manifest(text)
    except ManifestError as exc:
        assert exc.problems


def _manifest(state: tuple[bool, frozenset[int]]) -> Manifest:
    exists, ports = state
    if not exists:
        return parse_manifest("services: []\n")
    endpoints = ", ".join(f"10.0.0.1:{port}" for port in sorted(ports))
    return parse_manifest(f"services:\n  - name: web\n    endpoints: [{endpoints}]\n")


_STATES = st.tuples(st.booleans(), st.frozensets(st.integers(1, 8), max_size=5))


@settings(max_examples=200, deadline=None)
@given(_STATES, st.lists(_STATES, max_size=8))
def test_the_client_view_always_converges(
    first: tuple[bool, frozenset[int]], changes: list[tuple[bool, frozenset[int]]]
) -> None:
    watcher = DestinationWatcher(_manifest(first))
    queue: UpdateQueue[pb.Update] = UpdateQueue(64)
    watcher.subscribe("web", EndpointTranslator(queue))
    view = ServiceView("web")
    for state in [first, *changes]:
        watcher.update_manifest(_manifest(state))
        while (update := queue.get_nowait()) is not None:
            apply_update(view, update)
        exists, ports = state
        assert view.exists is exists
        assert {port for _, port in view.endpoints} == (set(ports) if exists else set())
