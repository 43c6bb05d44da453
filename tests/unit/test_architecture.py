"""Dependencies point inward (DESIGN.md, layout table): checked on the source, not by
convention."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"domain", "projections", "streams", "api", "infra"}
MAY_IMPORT = {
    "domain": set(),
    "projections": {"domain"},
    "streams": {"domain", "projections", "infra"},
    "api": {"domain", "projections", "infra"},
    "infra": OURS,
}
# domain/ is pure: the standard library, eventsourcing's domain module, pydantic, and the
# numerical libraries the lifetime-value model is fitted with (no I/O in any of them).
# pydantic_core is pydantic's own validator core (its error types). phonenumbers and
# email_validator are pure as used: phonenumbers reads its metadata from Python modules in
# the package and opens no file or socket; email_validator imports dnspython only inside
# its deliverability module, loaded lazily and only when check_deliverability is true
# (domain/touchpoints.py always passes False), so a syntax check does no DNS.
DOMAIN_THIRD_PARTY = {
    "eventsourcing.domain",
    "pydantic",
    "pydantic_core",
    "numpy",
    "scipy",
    "phonenumbers",
    "email_validator",
}


def imports_of(package: str) -> set[tuple[Path, str]]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {(path, alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((path, node.module))
    return found


@pytest.mark.parametrize("package", sorted(OURS))
def test_a_package_imports_only_the_layers_inside_it(package: str) -> None:
    wrong = {
        (path.relative_to(ROOT).as_posix(), module)
        for path, module in imports_of(package)
        if (top := module.split(".")[0]) in OURS - {package} and top not in MAY_IMPORT[package]
    }
    assert not wrong


def test_the_domain_uses_only_the_standard_library_and_pure_libraries() -> None:
    wrong = {
        (path.relative_to(ROOT).as_posix(), module)
        for path, module in imports_of("domain")
        if module.split(".")[0] not in sys.stdlib_module_names | {"domain", "__future__"}
        and not any(
            module == allowed or module.startswith(allowed + ".") for allowed in DOMAIN_THIRD_PARTY
        )
    }
    assert not wrong
