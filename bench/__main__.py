"""``python -m bench [--quick] [--only NAME] [--json PATH]``: run the benchmarks, print a
Markdown table, write the results as JSON (default ``bench/results/latest.json``)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from bench._common import Row, fmt_number, machine

# In the order they run; files and scale_out late (they need the files workload).
BENCHMARKS = (
    "envelope",
    "mail_import",
    "refresh",
    "vault_unwrap",
    "hsm_unwrap",
    "read_cache",
    "files",
    "scale_out",
    "cli_startup",
)
DEFAULT_JSON = Path(__file__).parent / "results" / "latest.json"


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"bench.{name}")


def _met(row: Row) -> str:
    if row.met is None:
        return ""
    return "yes" if row.met else "**no**"


def _ratio(row: Row) -> str:
    if row.ratio is None:
        return "-"
    return f"{row.ratio:.2f}x" if row.ratio < 10 else f"{row.ratio:.1f}x"


def markdown(rows: list[Row]) -> str:
    lines = [
        "| benchmark | case | metric | ours | baseline | baseline value | ratio | target | met |",
        "|---|---|---|---:|---|---:|---:|---|---|",
    ]
    for row in rows:
        baseline = row.baseline + (f" ({row.note})" if row.note else "")
        lines.append(
            f"| {row.benchmark} | {row.case} | {row.metric} | {fmt_number(row.value)} "
            f"| {baseline} | {fmt_number(row.baseline_value)} | {_ratio(row)} "
            f"| {row.target} | {_met(row)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI (< 1 min)")
    parser.add_argument("--only", choices=BENCHMARKS, action="append", help="run just this one")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write JSON")
    args = parser.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    info = machine()
    print(
        f"# customerkey benchmarks ({'quick' if args.quick else 'full'})\n\n"
        f"nproc {info['nproc']}, {info['cpu']}, Python {info['python']}, "
        f"cryptography {info['cryptography']}, aws-encryption-sdk "
        f"{info['aws_encryption_sdk'] or 'not installed'}, load {info['loadavg_at_start']}\n",
        flush=True,
    )
    rows: list[Row] = []
    failures: dict[str, str] = {}
    durations: dict[str, float] = {}
    for name in names:
        module = _module(name)
        print(f"running {name}: {module.TITLE} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            got: list[Row] = module.run(args.quick)
        except Exception:
            failures[name] = traceback.format_exc()
            print(failures[name], file=sys.stderr, flush=True)
            got = []
        durations[name] = round(time.perf_counter() - start, 2)
        print(f"  {name}: {durations[name]} s", file=sys.stderr, flush=True)
        rows.extend(got)
    print(markdown(rows))
    if failures:
        print("\nfailed: " + ", ".join(failures))
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": info,
        "durations_s": durations,
        "rows": [row.as_dict() for row in rows],
        "failures": failures,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nJSON: {args.json}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
