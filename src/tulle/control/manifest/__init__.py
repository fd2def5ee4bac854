"""The local manifest (`mesh.yaml`): its format, validation and conversion.

The manifest is the embedded source of truth of the control plane: services,
their endpoints (or the instances `tulle up` starts), routes, timeouts, retries
and traffic splits. Its shape follows Gateway API HTTPRoute (matches, paths,
headers, durations) and Linkerd's ServiceProfile (retryBudget, retryable), so
that the same documents can later be served from Kubernetes resources.

Validation works on YAML *nodes* rather than on loaded Python objects so that
every problem names both the field and the line it sits on, e.g.
`mesh.yaml:14: services[2].routes[0].timeout: expected a duration like "500ms"
or "2s", got "fast"`. It collects every problem it can find in one pass rather
than stopping at the first, because a user fixing a file wants the full list.
The format is documented in docs/manifest.md; keep the two in step.

The modules, one concern each: `document` (bytes to a bounded YAML node tree),
`errors`, `reader` (the shared reader core: generic shapes, each error naming
its field), `services` (services, endpoints, routes, budgets, backends),
`matches` (HTTP route matches, shared with policy), `policy` (the `policy:`
section), `model` (what the control plane serves) and `parse` (the top level
and the entry points). The local runner's fields (`instances:`, `ingress:`)
are read by tulle.local.manifest; durations by tulle.core.duration. This
module is the public face: callers import from here.
"""

from tulle.control.manifest.document import (
    MAX_ALIAS_NODES,
    MAX_MANIFEST_BYTES,
    MAX_NESTING,
    MAX_PARSE_SECONDS,
    compose_bounded,
    decode_manifest,
    load_document,
    read_manifest_bytes,
)
from tulle.control.manifest.errors import ManifestError, Problem
from tulle.control.manifest.matches import HTTP_METHODS
from tulle.control.manifest.model import Manifest, ServiceSpec
from tulle.control.manifest.parse import ManifestReader, load_manifest, parse_manifest, read_with
from tulle.control.manifest.services import DEFAULT_ENDPOINT_WEIGHT, MAX_WEIGHT, PROTOCOL_HINTS
from tulle.core.discovery import PROTOCOLS
from tulle.core.duration import (
    MAX_DURATION_MS,
    MESH_DURATION,
    DurationError,
    duration_ms,
    parse_duration,
)

__all__ = [
    "DEFAULT_ENDPOINT_WEIGHT",
    "HTTP_METHODS",
    "MAX_ALIAS_NODES",
    "MAX_DURATION_MS",
    "MAX_MANIFEST_BYTES",
    "MAX_NESTING",
    "MAX_PARSE_SECONDS",
    "MAX_WEIGHT",
    "MESH_DURATION",
    "PROTOCOLS",
    "PROTOCOL_HINTS",
    "DurationError",
    "Manifest",
    "ManifestError",
    "ManifestReader",
    "Problem",
    "ServiceSpec",
    "compose_bounded",
    "decode_manifest",
    "duration_ms",
    "load_document",
    "load_manifest",
    "parse_duration",
    "parse_manifest",
    "read_manifest_bytes",
    "read_with",
]
