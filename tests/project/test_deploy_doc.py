"""docs/DEPLOY.md names only what exists: every ``CUSTOMERKEY_*`` setting it names is a field
of ``customerkey.config.Settings`` (the environment variable pydantic-settings reads for it),
and every repository path it names is a file or folder of the repository."""

from __future__ import annotations

import re
from pathlib import Path

from customerkey.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "DEPLOY.md"
SETTING = re.compile(r"\bCUSTOMERKEY_[A-Z0-9_]+\b")
# Paths inside the repository, as the doc writes them (docs/..., src/..., bench/...).
REPO_PATH = re.compile(r"\b(?:docs|src|bench|tests)/[A-Za-z0-9_./-]*[A-Za-z0-9_]")


def settings_named(text: str) -> set[str]:
    return set(SETTING.findall(text))


def test_every_setting_the_deploy_doc_names_exists() -> None:
    prefix = Settings.model_config.get("env_prefix", "")
    assert prefix == "CUSTOMERKEY_"
    known = {prefix + name.upper() for name in Settings.model_fields}
    named = settings_named(DOC.read_text())
    assert len(named) >= 20, "the doc names the settings each host needs"
    unknown = sorted(named - known)
    assert not unknown, f"docs/DEPLOY.md names settings config.py does not have: {unknown}"


def test_every_repository_path_the_deploy_doc_names_exists() -> None:
    paths = set(REPO_PATH.findall(DOC.read_text()))
    assert "docs/HSM.md" in paths
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"docs/DEPLOY.md names paths the repository does not have: {missing}"


def test_the_check_finds_a_setting_that_does_not_exist() -> None:
    known = {"CUSTOMERKEY_" + name.upper() for name in Settings.model_fields}
    text = "set `CUSTOMERKEY_S3_BUCKET` and `CUSTOMERKEY_S3_BUKET`"
    assert settings_named(text) - known == {"CUSTOMERKEY_S3_BUKET"}
