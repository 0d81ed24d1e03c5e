"""files: upload and download a 2 GiB file through the files workload (``--quick``: 64 MiB).

Only when ``runtime.files`` exists (the files workload). The source file is generated on disk
(AES-CTR keystream: incompressible, cheap), so it sits in the page cache for every reader
alike. A child process (so that its peak RSS is the workload's alone) opens the platform,
registers the tenant's files DEP over two RSA-2048 root keys (SharePoint service principal),
creates a site, uploads the file from disk and downloads it to another file, and reports the
times and its peak RSS (``VmHWM`` of the whole process, interpreter included). The download
is checked against the source (SHA-256).

Baselines: ``cp`` of the same file (a subprocess, as a person would copy it), and ``cp``
followed by an fsync of the copy: uploads end with every chunk on disk (the blob store fsyncs
each), downloads and ``cp`` do not. And a plain copy in Python (``read``/``write`` of 1 MiB into
a new file, no crypto): ``cp`` copies inside the kernel (``copy_file_range``), while anything
that must see the bytes in user space (as encryption must) pays for them crossing into the
process and back; this row shows how much of the gap to ``cp`` that alone explains.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from bench._common import MIB, Row, temp_dir

NAME = "files"
TITLE = "files workload: upload and download a 2 GiB file"

FULL_SIZE = 2048 * MIB
QUICK_SIZE = 64 * MIB
SHARE_TARGET = 0.5
RSS_TARGET_MB = 150.0

_CHILD = r"""
import hashlib, io, json, sys, time
from pathlib import Path
from customerkey.config import Settings
from customerkey.runtime import Runtime
from customerkey.identity.workload_principals import SHAREPOINT
from customerkey.vault.models import OPERATOR

home, source, dest = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
site = "https://contoso.sharepoint.local/sites/finance"
rt = Runtime.open(Settings(home=home, database_url=f"sqlite:///{home / 'customerkey.db'}"))
rt.tenants.create(OPERATOR, "contoso", mail_domain="contoso.com")
uris = []
for vault, region in (("contoso-o365sp-vaulta1", "eastus"), ("contoso-o365sp-vaulta2", "westus")):
    rt.vault.create_vault(OPERATOR, vault, subscription="contoso-sub", region=region,
                          tenant="contoso", purge_protection=True)
    rt.vault.create_key(OPERATOR, vault, "root", kty="RSA-HSM", key_ops=["wrapKey", "unwrapKey"])
    rt.vault.set_access_policy(OPERATOR, vault, SHAREPOINT.app_id, ["wrapKey", "unwrapKey", "get"])
    uris.append(f"https://{vault}.vault.azure.net/keys/root")
rt.files.register(OPERATOR, "contoso", uris[0], uris[1])
rt.worker().run_until_idle()
rt.files.create_site(OPERATOR, site)
rt.files.upload(OPERATOR, site, "warmup.bin", io.BytesIO(b"w" * 100_000))
rt.files.download(OPERATOR, site, "warmup.bin", io.BytesIO())
start = time.perf_counter()
with source.open("rb") as handle:
    version = rt.files.upload(OPERATOR, site, "Shared Documents/big.bin", handle)
up = time.perf_counter() - start
start = time.perf_counter()
with dest.open("wb") as handle:
    rt.files.download(OPERATOR, site, "Shared Documents/big.bin", handle)
down = time.perf_counter() - start
peak = 0
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        peak = int(line.split()[1]) * 1024
rt.close()
print(json.dumps({"up": up, "down": down, "peak_rss": peak, "size": version.size}))
"""


def available() -> str | None:
    """Why the files benchmark cannot run here, or None when it can."""
    try:
        from customerkey.runtime import Runtime
        from customerkey.workloads.files.service import FilesService
    except ImportError as exc:
        return f"files workload not importable: {exc}"
    if "files" not in Runtime.__dataclass_fields__:
        return "runtime.files does not exist"
    for method in ("register", "create_site", "upload", "download"):
        if not hasattr(FilesService, method):
            return f"FilesService.{method} is missing"
    return None


def _generate(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    encryptor = Cipher(algorithms.AES(bytes(32)), modes.CTR(bytes(16))).encryptor()
    zeros = bytes(8 * MIB)
    with path.open("wb") as out:
        left = size
        while left > 0:
            chunk = encryptor.update(zeros[: min(left, len(zeros))])
            out.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def _cp(source: Path, dest: Path, *, fsync: bool) -> float:
    start = time.perf_counter()
    subprocess.run(["cp", str(source), str(dest)], check=True)
    if fsync:
        fd = os.open(dest, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    seconds = time.perf_counter() - start
    dest.unlink()
    return seconds


def _python_copy(source: Path, dest: Path) -> float:
    start = time.perf_counter()
    with source.open("rb") as src, dest.open("wb") as out:
        while chunk := src.read(MIB):
            out.write(chunk)
    seconds = time.perf_counter() - start
    dest.unlink()
    return seconds


def run(quick: bool) -> list[Row]:
    why = available()
    if why is not None:
        return [Row(NAME, "upload/download", "MB/s", float("nan"), note=f"skipped: {why}")]
    size = QUICK_SIZE if quick else FULL_SIZE
    label = f"{size // MIB:,} MiB"
    with temp_dir("files") as tmp:
        source = tmp / "source.bin"
        expected = _generate(source, size)
        cp = min(_cp(source, tmp / "copy.bin", fsync=False) for _ in range(2))
        cp_sync = _cp(source, tmp / "copy.bin", fsync=True)
        plain = _python_copy(source, tmp / "copy.bin")
        dest = tmp / "download.bin"
        root = Path(__file__).resolve().parents[1]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
        env = {k: v for k, v in env.items() if not k.startswith("CUSTOMERKEY_")}
        result = subprocess.run(
            [sys.executable, "-c", _CHILD, str(tmp / "home"), str(source), str(dest)],
            capture_output=True,
            text=True,
            env=env,
            timeout=1800,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"files child failed:\n{result.stderr[-3000:]}")
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["size"] == size
        assert _digest(dest) == expected, "the download differs from the upload"
    mb = size / 1e6
    rows: list[Row] = []
    for step, seconds in (("upload", report["up"]), ("download", report["down"])):
        ours = mb / seconds
        cp_rate = mb / cp
        rows.append(
            Row(
                NAME,
                f"{label} {step}",
                "MB/s",
                ours,
                baseline="cp",
                baseline_value=cp_rate,
                ratio=ours / cp_rate,
                target=f">= {SHARE_TARGET:.0%} of cp",
                met=ours / cp_rate >= SHARE_TARGET,
                extra={"seconds": seconds, "cp_seconds": cp},
            )
        )
        rows.append(
            Row(
                NAME,
                f"{label} {step}",
                "MB/s",
                ours,
                baseline="cp + fsync",
                baseline_value=mb / cp_sync,
                ratio=ours / (mb / cp_sync),
            )
        )
        rows.append(
            Row(
                NAME,
                f"{label} {step}",
                "MB/s",
                ours,
                baseline="python read/write copy",
                baseline_value=mb / plain,
                ratio=ours / (mb / plain),
            )
        )
    peak = report["peak_rss"] / 1e6
    rows.append(
        Row(
            NAME,
            f"{label} upload+download",
            "peak RSS MB",
            peak,
            target=f"< {RSS_TARGET_MB:.0f} MB",
            met=peak < RSS_TARGET_MB,
            note="whole process, interpreter included",
        )
    )
    return rows
