"""Writes ``hsm_backup_v2.json``: a format-2 key backup (``vault.backup``) with fixed inputs, the
token's sealing done in software (AES-256-GCM) so the bytes are reproducible. Run from the
repository root: ``python -m tests.vectors.generate_hsm_backup``."""

from __future__ import annotations

import json
from pathlib import Path

from customerkey.vault import backup as backup_format
from tests.support.hsm_backup_vector import VECTORS, SoftwareSeal, vector_backup


def main() -> None:
    vector = {
        "security_domain": "5f3c0a9e12b4d677",
        "backup_key": bytes(range(32)).hex(),
        "nonce": bytes(range(100, 112)).hex(),
        "wrapped_backup_key": bytes(range(200, 240)).hex(),
        "wrapped_version": bytes(range(7, 7 + 96)).hex(),
        "created": 1_700_000_000,
        "version": "0123456789abcdef0123456789abcdef",
        "n": "x" * 342,
    }
    blob = backup_format.encode_hsm_backup(
        vector_backup(vector), seal_in_token=SoftwareSeal(vector).seal
    )
    vector["blob"] = blob.hex()
    Path(VECTORS).write_text(json.dumps(vector, indent=2) + "\n")


if __name__ == "__main__":
    main()
