"""hsm unwrap: unwrapKey with an RSA-2048 key held in SoftHSM2 (RSA-HSM) against the same
operation on an RSA-2048 key protected in software, through the vault service in-process.

Set-up: a SoftHSM2 token of its own (a ``softhsm2.conf`` whose token folder is temporary,
``softhsm2-util --init-token``), and a platform whose PKCS#11 settings name it, with one vault
holding an ``RSA`` key (private key sealed under the master key) and an ``RSA-HSM`` key (made
inside the token, sensitive and non-extractable). One 32-byte key is wrapped under each
(RSA-OAEP-256, on the public key).

Timed: ``KeyVaultService.unwrap_key(..., "RSA-OAEP-256", wrapped)`` as the operator, which is
what a workload's key provider calls (authorization, the key row, the public-key check, the
private operation, the usage count and the audit record). For the RSA-HSM key the private
operation is ``CKM_RSA_X_509`` in the token and the OAEP decoding in software (SoftHSM 2.6
takes no SHA-256 OAEP parameters); for the RSA key it is pyca's OAEP decrypt after opening the
sealed private key. On 1 thread and on ``nproc`` threads (the token's session pool serves one
operation per session), the two keys taking turns in every repeat; best-of-N ops/s, and p50 /
p99 of every call of every repeat. The ratio is HSM / software.

Skipped, with a row saying so, when SoftHSM2 is not installed (``apt-get install softhsm2``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench._common import Row, open_runtime, percentile, ratio, temp_dir
from customerkey.runtime import Runtime
from customerkey.vault.models import OPERATOR

NAME = "hsm_unwrap"
TITLE = "unwrapKey RSA-2048: SoftHSM2 (RSA-HSM) against software (RSA), in-process"

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
LABEL = "customerkey-bench"
PIN = "bench-user-pin"
VAULT = "bench-hsm-vault"
PLAIN = os.urandom(32)


def softhsm_missing() -> str | None:
    if shutil.which("softhsm2-util") is None or not Path(MODULE).exists():
        return "SoftHSM2 is not installed (apt-get install softhsm2): skipped"
    return None


def _token(folder: Path) -> Path:
    """A fresh token in ``folder``; returns the PIN file. SoftHSM reads ``SOFTHSM2_CONF`` when
    the module is first loaded in a process, so this must run before any other token use."""
    tokens = folder / "tokens"
    tokens.mkdir(parents=True)
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        [
            *("softhsm2-util", "--init-token", "--free", "--label", LABEL),
            *("--pin", PIN, "--so-pin", "bench-so-pin"),
        ],
        check=True,
        capture_output=True,
    )
    pin_file = folder / "pin"
    pin_file.write_text(PIN)
    pin_file.chmod(0o600)
    return pin_file


def _unwrapper(rt: Runtime, name: str, kty: str) -> Callable[[], object]:
    bundle = rt.vault.create_key(OPERATOR, VAULT, name, kty=kty, size=2048)
    version = bundle.id.version
    wrapped = rt.vault.wrap_key(OPERATOR, VAULT, name, version, "RSA-OAEP-256", PLAIN).value

    def unwrap() -> object:
        result = rt.vault.unwrap_key(OPERATOR, VAULT, name, version, "RSA-OAEP-256", wrapped)
        if result.value != PLAIN:
            raise AssertionError(f"{name} unwrapped something else")
        return result

    unwrap()  # checked once before timing
    return unwrap


def _measure(fn: Callable[[], object], threads: int, seconds: float) -> tuple[float, list[float]]:
    """Calls per second over ``seconds`` on ``threads`` threads, and every call's latency (ms)."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    deadline = time.perf_counter() + seconds
    failures: list[BaseException] = []

    def loop(mine: list[float]) -> None:
        try:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                fn()
                mine.append((time.perf_counter() - start) * 1000)
        except BaseException as exc:  # reported after the join
            failures.append(exc)

    workers = [threading.Thread(target=loop, args=(mine,)) for mine in latencies]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise failures[0]
    flat = [value for mine in latencies for value in mine]
    return len(flat) / elapsed, flat


def run(quick: bool) -> list[Row]:
    missing = softhsm_missing()
    if missing is not None:
        print(f"  {NAME}: {missing}", flush=True)
        return [Row(NAME, "RSA-2048 unwrapKey", "ops/s", float("nan"), note=missing)]
    seconds, repeats = (1.0, 1) if quick else (3.0, 3)
    nproc = os.cpu_count() or 1
    rows: list[Row] = []
    with temp_dir("hsm") as tmp:
        pin_file = _token(tmp / "softhsm")
        rt = open_runtime(
            tmp / "home",
            pkcs11_module=MODULE,
            pkcs11_token_label=LABEL,
            pkcs11_pin_file=pin_file,
        )
        try:
            rt.vault.create_vault(OPERATOR, VAULT, subscription="bench-sub", region="eastus")
            contenders = {
                "hsm": _unwrapper(rt, "hsm-key", "RSA-HSM"),
                "software": _unwrapper(rt, "soft-key", "RSA"),
            }
            for threads in sorted({1, nproc}):
                best = dict.fromkeys(contenders, 0.0)
                seen: dict[str, list[float]] = {name: [] for name in contenders}
                for repeat in range(repeats):
                    order = list(contenders) if repeat % 2 == 0 else list(reversed(contenders))
                    for name in order:
                        ops, latencies = _measure(contenders[name], threads, seconds)
                        best[name] = max(best[name], ops)
                        seen[name].extend(latencies)
                case = f"RSA-OAEP-256, {threads} thread(s)"
                rows.append(
                    Row(
                        NAME,
                        case,
                        "unwrapKey/s",
                        best["hsm"],
                        baseline="software RSA key, same run",
                        baseline_value=best["software"],
                        ratio=ratio(best["hsm"], best["software"]),
                    )
                )
                for pct in (50, 99):
                    ours = percentile(seen["hsm"], pct)
                    theirs = percentile(seen["software"], pct)
                    rows.append(
                        Row(
                            NAME,
                            case,
                            f"p{pct} ms",
                            ours,
                            baseline="software RSA key, same run",
                            baseline_value=theirs,
                            ratio=ratio(ours, theirs),
                            extra={
                                "calls_hsm": len(seen["hsm"]),
                                "calls_sw": len(seen["software"]),
                            },
                        )
                    )
        finally:
            rt.close()
    return rows
