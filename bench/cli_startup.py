"""CLI start-up: ``customerkey --version``, ``--help`` and a simple command, each a fresh process.

Each case runs ``python -m customerkey ARGS`` in a new interpreter, as a user's shell does, and
is timed from spawn to exit (wall clock, best and median of N) with the CPU time the child
used (user + system, from ``RUSAGE_CHILDREN``; on a machine shared with other work that is the
steadier figure). The simple command is ``tenant list`` on a fresh installation (``init`` and
one tenant, made before timing), so it opens the runtime and the database. The baseline is the
interpreter alone (``python -c pass``), timed the same way in the same run.

Bytecode is cached as an installed package's is: the children run with
``PYTHONDONTWRITEBYTECODE`` unset and ``PYTHONPYCACHEPREFIX`` pointing into a temporary folder
(so the source tree stays clean), and each case runs once untimed first.

Targets (issue 17): ``--version`` and ``--help`` under 0.3 s, a simple command under 0.6 s.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench._common import Row, temp_dir

NAME = "cli_startup"
TITLE = "CLI start-up: --version, --help, tenant list (fresh process each)"

TARGETS = {"--version": 0.3, "--help": 0.3, "tenant list": 0.6}


def _environment(pycache: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CUSTOMERKEY_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _time(argv: list[str], env: dict[str, str], repeats: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of ``repeats`` runs of ``argv`` (after one untimed run)."""
    subprocess.run(argv, env=env, capture_output=True, check=True)
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(repeats):
        cpu_before = _children_cpu()
        start = time.perf_counter()
        subprocess.run(argv, env=env, capture_output=True, check=True)
        walls.append(time.perf_counter() - start)
        cpus.append(_children_cpu() - cpu_before)
    return walls, cpus


def run(quick: bool) -> list[Row]:
    repeats = 5 if quick else 15
    rows: list[Row] = []
    with temp_dir("cli") as folder:
        env = _environment(folder / "pycache")
        home = folder / "home"
        cli = [sys.executable, "-m", "customerkey", "--home", str(home)]
        subprocess.run([*cli, "init"], env=env, capture_output=True, check=True)
        subprocess.run(
            [*cli, "tenant", "create", "contoso", "--mail-domain", "contoso.com"],
            env=env,
            capture_output=True,
            check=True,
        )
        base_wall, base_cpu = _time([sys.executable, "-c", "pass"], env, repeats)
        cases = {
            "--version": [sys.executable, "-m", "customerkey", "--version"],
            "--help": [sys.executable, "-m", "customerkey", "--help"],
            "tenant list": [*cli, "tenant", "list"],
        }
        for case, argv in cases.items():
            walls, cpus = _time(argv, env, repeats)
            target = TARGETS[case]
            median = statistics.median(walls)
            rows.append(
                Row(
                    NAME,
                    case,
                    "wall s, median",
                    median,
                    baseline="python -c pass",
                    baseline_value=statistics.median(base_wall),
                    ratio=median / statistics.median(base_wall),
                    target=f"< {target} s",
                    met=median < target,
                    extra={"walls": walls, "cpus": cpus},
                )
            )
            rows.append(Row(NAME, case, "wall s, best", min(walls)))
            rows.append(
                Row(
                    NAME,
                    case,
                    "CPU s, median",
                    statistics.median(cpus),
                    baseline="python -c pass",
                    baseline_value=statistics.median(base_cpu),
                    ratio=statistics.median(cpus) / max(statistics.median(base_cpu), 1e-9),
                )
            )
    return rows
