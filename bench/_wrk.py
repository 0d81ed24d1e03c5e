"""Drive a server with wrk (the C HTTP load generator) and a script of ``bench/wrk/``.

``run_wrk`` runs ``wrk -t T -c C -d Ns --latency --timeout ... -s SCRIPT URL`` as a child
process, the script's settings in its environment, and reads the one ``UNWRAP_RESULT {json}``
line the script's ``done()`` prints (see ``bench/wrk/unwrap.lua``): wrk's request count and
socket errors, the script's own count of answers that were not 200 or not the expected body,
and wrk's latency percentiles. wrk's own CPU time (``RUSAGE_CHILDREN`` before and after) is
recorded too, to show the load generator is not what limits a figure.

wrk keeps its connections alive, sends the next request on a connection as soon as the answer
is in (a closed loop, like the ``httpx`` clients), does not verify TLS certificates (fine on
loopback) and counts latency from send to the last byte of the answer.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).parent / "wrk"
RESULT_PREFIX = "UNWRAP_RESULT "


def wrk_binary() -> str | None:
    """The wrk on PATH (``apt-get install wrk``), or None."""
    return shutil.which("wrk")


@dataclass
class WrkResult:
    duration_s: float
    requests: int  # answers wrk read, whatever their status
    ok: int  # answers that were 200 with the expected body
    non_200: int
    wrong_body: int
    statuses: dict[str, int]  # the statuses other than 200 and their counts
    first_failure: str  # status and start of the body of the first failed answer
    socket_errors: dict[str, int]  # wrk's connect/read/write/timeout counts
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    wrk_cpu_s: float  # user + system CPU of the wrk process
    command: list[str] = field(default_factory=list)

    @property
    def failures(self) -> int:
        sockets = sum(v for k, v in self.socket_errors.items() if k != "status")
        return self.non_200 + self.wrong_body + sockets

    @property
    def ops(self) -> float:
        """Good answers (200, expected body) per second."""
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    def failure_note(self) -> str:
        """'' when every answer was good, else what went wrong, briefly."""
        if not self.failures:
            return ""
        parts = []
        if self.non_200:
            codes = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
            parts.append(f"{self.non_200} non-200 ({codes})")
        if self.wrong_body:
            parts.append(f"{self.wrong_body} 200 with a wrong body")
        sockets = {k: v for k, v in self.socket_errors.items() if v and k != "status"}
        if sockets:
            parts.append("socket errors " + ", ".join(f"{k} {v}" for k, v in sockets.items()))
        first = f"; first: {self.first_failure[:120]!r}" if self.first_failure else ""
        return "FAILED ANSWERS: " + "; ".join(parts) + first


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(
    script: str,
    url: str,
    *,
    threads: int,
    connections: int,
    seconds: float,
    env: dict[str, str],
    timeout_s: float = 10.0,
) -> WrkResult:
    """Run wrk with ``bench/wrk/<script>`` against ``url``; raises ``RuntimeError`` when wrk
    fails or prints no result line (its output is in the message)."""
    binary = wrk_binary()
    if binary is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    command = [
        binary,
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{seconds:g}s",
        "--latency",
        "--timeout",
        f"{timeout_s:g}s",
        "-s",
        str(SCRIPTS / script),
        url,
    ]
    before = _children_cpu()
    done = subprocess.run(
        command,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        errors="replace",
        timeout=seconds + timeout_s + 60,
        check=False,
    )
    wrk_cpu = _children_cpu() - before
    line = next(
        (x for x in done.stdout.splitlines() if x.startswith(RESULT_PREFIX)),
        None,
    )
    if done.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk exited {done.returncode} without a result:\n{done.stdout[-2000:]}\n"
            f"{done.stderr[-2000:]}"
        )
    data: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
    latency = data["latency_us"]
    return WrkResult(
        duration_s=data["duration_us"] / 1e6,
        requests=data["requests"],
        ok=data["ok"],
        non_200=data["non_200"],
        wrong_body=data["wrong_body"],
        statuses={str(k): int(v) for k, v in data["statuses"].items()},
        first_failure=data["first_failure"],
        socket_errors={str(k): int(v) for k, v in data["errors"].items()},
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        max_ms=latency["max"] / 1000,
        wrk_cpu_s=wrk_cpu,
        command=command,
    )
