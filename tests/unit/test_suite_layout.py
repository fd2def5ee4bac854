"""The suite's own layout rules (no sockets).

Test directories are not packages and pytest imports test files by basename
(its default `prepend` mode, which the helper imports such as `support.mesh`
rely on), so two test files with one basename stop the whole run at
collection ("import file mismatch"). This catches it at once.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_file_basenames_are_unique() -> None:
    by_name: defaultdict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        by_name[path.name].append(str(path.relative_to(TESTS)))
    duplicates = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    assert duplicates == {}, f"rename one of each: {duplicates}"
