"""The layout of the tests: no test module imports another test module.

What tests share lives in ``tests/support/``. A test module imported from another one is
collected twice under two names (pytest's and the importer's), and its fixtures and module
state leak into the importer; moving or renaming it breaks tests that are not its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _is_test_module(dotted: str) -> bool:
    return dotted.rsplit(".", 1)[-1].startswith("test_")


def imported_test_modules(source: str) -> list[str]:
    """The test modules that ``source`` imports, as written (``.`` for each relative level)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [
                a.name
                for a in node.names
                if (a.name.startswith("tests.") or "." not in a.name) and _is_test_module(a.name)
            ]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            if not (node.level or module == "tests" or module.startswith("tests.")):
                continue
            if node.module and _is_test_module(node.module):
                found.append(module)
            else:  # ``from tests.x import test_y``, ``from . import test_y``
                sep = "" if module.endswith(".") else "."
                found += [f"{module}{sep}{a.name}" for a in node.names if _is_test_module(a.name)]
    return found


def test_no_test_module_imports_another_test_module() -> None:
    offenders = {
        str(path.relative_to(TESTS.parent)): imported
        for path in sorted(TESTS.rglob("*.py"))
        if (imported := imported_test_modules(path.read_text(encoding="utf-8")))
    }
    assert not offenders, (
        "test modules import other test modules; move what they share to tests/support/:\n"
        + "\n".join(f"  {path}: {', '.join(names)}" for path, names in offenders.items())
    )


def test_every_form_of_test_module_import_is_found() -> None:
    source = """
import os
import tests.integration.test_a
import test_b
from tests.integration.test_c import helper
from tests.integration import test_d, helpers
from .test_e import helper
from . import test_f
from .. import test_g
from tests.support.mail_import import verify_import
from tests.support import mail_vault_faults
import pytest
"""
    assert imported_test_modules(source) == [
        "tests.integration.test_a",
        "test_b",
        "tests.integration.test_c",
        "tests.integration.test_d",
        ".test_e",
        ".test_f",
        "..test_g",
    ]
