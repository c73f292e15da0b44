"""`python -m bench`: every benchmark, one table, and bench/results.json.

Rows are {metric, value, unit, target, pass}: pass is true/false against the target, or null
for a reference figure or a part that is not measured (the note says why). Ratios are
measured side by side in the same run, because this machine is shared and absolute times
drift. The exit code is 0 unless a benchmark crashed; a missed target is a finding, shown in
the table and the JSON, not a crash (use --strict to fail on it).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from bench.common import ROOT, Row, fake_aws_env, fmt, table, utcnow

RESULTS = ROOT / "bench" / "results.json"


def _benchmarks(args: argparse.Namespace) -> dict[str, Callable[[], list[Row]]]:
    from bench import coldstart, runner_costs

    benches: dict[str, Callable[[], list[Row]]] = {
        "coldstart": lambda: coldstart.measure(args.repeats),
        "writes": runner_costs.writes_per_run,
        "active": lambda: runner_costs.active_runs_cost(args.history),
    }
    from bench import notifier_cost, stats_cost

    benches["stats"] = lambda: stats_cost.measure(args.history)
    benches["notifier"] = lambda: notifier_cost.measure(args.transitions)
    try:
        from bench import local_stack

        benches["e2e"] = lambda: local_stack.end_to_end_latency(args.e2e_runs)
        benches["startup"] = local_stack.fresh_clone_startup
        benches["history"] = local_stack.moto_history_cost
        benches["api"] = lambda: local_stack.api_under_load(args.api_duration, args.api_clients)
    except ImportError:
        pass
    return benches


def markdown(document: dict[str, Any]) -> str:
    """A results document as docs/performance.md's "Latest figures" table."""
    verdict = {True: "PASS", False: "**FAIL**", None: "-"}
    lines = ["| metric | value | unit | target | pass | note |", "| --- | --- | --- | --- | --- | --- |"]
    for row in document["rows"]:
        cells = [
            row["metric"],
            fmt(row["value"]),
            row["unit"],
            row["target"],
            verdict[row["pass"]],
            row["note"],
        ]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", action="append", help="run only these benchmarks (repeatable)")
    parser.add_argument("--repeats", type=int, default=7, help="cold start samples per function")
    parser.add_argument("--history", type=int, default=100_000, help="recorded runs for the cost benches")
    parser.add_argument("--transitions", type=int, default=1_000, help="run transitions for the notifier")
    parser.add_argument("--e2e-runs", type=int, default=20, help="scheduled runs for the latency bench")
    parser.add_argument("--api-duration", type=float, default=30.0, help="seconds of API load")
    parser.add_argument("--api-clients", type=int, default=20, help="concurrent API clients")
    parser.add_argument("--output", default=str(RESULTS), help="where to write the JSON results")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="run nothing: print --output's figures as the table of docs/performance.md",
    )
    args = parser.parse_args(argv)
    if args.markdown:
        with open(args.output) as handle:
            print(markdown(json.load(handle)))
        return 0

    fake_aws_env()
    benches = _benchmarks(args)
    names = args.only or list(benches)
    unknown = [n for n in names if n not in benches]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {sorted(benches)}")
    rows: list[Row] = []
    crashed = False
    started = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        print(f"... {name}", file=sys.stderr, flush=True)
        try:
            # Powertools' EMF auto-flush (every 100 metrics) prints even when metrics are
            # disabled; the handlers' stdout is not the table's.
            with contextlib.redirect_stdout(io.StringIO()):
                got = benches[name]()
        except Exception as exc:
            crashed = True
            traceback.print_exc()
            got = [Row(f"{name}: crashed", None, "", "-", False, repr(exc)[:300])]
        rows.extend(got)
        print(f"    {name} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    verdict = {True: "PASS", False: "FAIL", None: "-"}
    print(
        table(
            ["metric", "value", "unit", "target", "pass", "note"],
            [[r.metric, fmt(r.value), r.unit, r.target, verdict[r.passed], r.note] for r in rows],
        )
    )
    total = time.perf_counter() - started
    document = {
        "generated_at": utcnow().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {platform.system()}",
        "seconds": round(total, 1),
        "rows": [r.as_json() for r in rows],
    }
    if set(names) != set(benches):
        document["partial"] = sorted(names)
    with open(args.output, "w") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")
    missed = [r for r in rows if r.passed is False]
    print(
        f"\n{sum(r.passed is True for r in rows)} targets met, {len(missed)} missed, "
        f"{sum(r.passed is None for r in rows)} reference/not measured; {total:.0f} s; wrote {args.output}"
    )
    if crashed:
        return 2
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
