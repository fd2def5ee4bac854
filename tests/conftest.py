"""Settings every test runs with (unit, integration and e2e alike).

Tests never touch the user's own Tulle state: `TULLE_HOME` (where `tulle up`
registers the current mesh, tulle.local.registry) points at a directory of
this test session, and `tulle up` allocates every port instead of taking the
control plane's documented ones (8084, 8086, 9990), which a user's mesh or
another test's may hold. A test that wants either sets its own.
"""

from __future__ import annotations

import os
import shutil
import tempfile

_HOME = tempfile.mkdtemp(prefix="tulle-test-home-")
os.environ["TULLE_HOME"] = _HOME
os.environ["TULLE_UP_DEFAULT_PORTS"] = "0"
for _variable in ("TULLE_STATE_DIR", "TULLE_CONTROL_URL"):
    os.environ.pop(_variable, None)


def pytest_unconfigure() -> None:
    shutil.rmtree(_HOME, ignore_errors=True)
