"""`check` as data: categories of named checks, each with a hint, rendered alike everywhere.

The control plane runs the mesh checks (`GET /api/check`, and the Kubernetes
checks of `tulle.control.kubernetes.check`); the CLI runs the pre-flight
checks (`tulle.viz.checks`), which need no running mesh. All produce the same
`CheckReport`, and one renderer shows it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

OK = "ok"
WARN = "warn"
FAIL = "fail"
CERT_EXPIRY_WARN_S = 6 * 3600.0


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str = ""
    hint: str = ""


@dataclass(slots=True)
class Category:
    name: str
    checks: list[Check] = field(default_factory=list)

    def add(
        self, name: str, ok: bool, detail: str = "", hint: str = "", *, warn: bool = False
    ) -> None:
        status = OK if ok else (WARN if warn else FAIL)
        self.checks.append(Check(name, status, detail, "" if ok else hint))


@dataclass(slots=True)
class CheckReport:
    categories: list[Category] = field(default_factory=list)

    def category(self, name: str) -> Category:
        category = Category(name)
        self.categories.append(category)
        return category

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for cat in self.categories for c in cat.checks)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "categories": [asdict(category) for category in self.categories]}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> CheckReport:
        report = cls()
        for category in document.get("categories", []):
            target = report.category(str(category.get("name", "")))
            for check in category.get("checks", []):
                target.checks.append(
                    Check(
                        str(check.get("name", "")),
                        str(check.get("status", FAIL)),
                        str(check.get("detail", "")),
                        str(check.get("hint", "")),
                    )
                )
        return report
