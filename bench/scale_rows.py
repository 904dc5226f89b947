"""`make bench-scale`, its rows: how each phase grows with the rows of one table, against the raw SQL floor.

For each N (10,000, 100,000 and 1,000,000 rows x 384 dimensions, clustered as `make bench`'s are),
`bench/run.py` runs once in a process of its own: the raw floor (the conversion and the index build
by hand), InPlace Atomic and Concurrent, Parallel and Replicate, the backup, and the operator
(its idle memory and after a dry run over those rows). This script reads each run's results and
the child's peak RSS (the command line's engine ran in it), and writes
bench/results/<date>-scale-rows.json with:

- each phase's seconds at each N, and its ratio to the floor (the goal: 1.10 at 1,000,000 rows);
- the exponent fitted between consecutive N (1.0 grows linearly with the rows);
- verify's seconds, bounded by sampleQueries (the goal: flat in the rows);
- the write-blocking windows (Concurrent's conversion, Parallel's and Replicate's switchovers);
- the peak RSS of the command line and the operator's RSS (the goal: flat in the rows).

The target is the RuVector STAND-IN (pgvector's C code under RuVector's names), as in `make bench`.

    .venv/bin/python bench/scale_rows.py --rows 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GOAL_VS_FLOOR = 1.10


def one_size(rows: int, dims: int, work: Path, *, inplace_only: bool = False) -> dict[str, Any]:
    """bench/run.py at ``rows``, once, in a child process: its results and the child's peak RSS.

    ``inplace_only``: the floor, InPlace Atomic and Concurrent and the operator alone (at a million
    rows the whole of bench/run.py takes over an hour here; Parallel's and Replicate's windows are
    measured by the smaller sizes).
    """
    out = work / f"out-{rows}"
    command = [sys.executable, str(ROOT / "bench" / "run.py"), "--rows", str(rows), "--dims", str(dims),
               "--repeats", "1", "--work", str(work / f"run-{rows}"), "--out", str(out)]  # fmt: skip
    if inplace_only:
        command += ["--only", "inplace"]
    env = {key: value for key, value in os.environ.items() if key != "VMIG_RUVECTOR_PG_CONFIG"}  # the stand-in only
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert child.stdout is not None  # noqa: S101 - piped above
    for line in child.stdout:
        print(f"  [{rows:,}] {line.rstrip()}", flush=True)
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"bench/run.py --rows {rows} failed ({status})")
    (result_file,) = out.glob("*.json")
    return {
        **json.loads(result_file.read_text()),
        "cli_peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "bench_wall_s": round(time.perf_counter() - started, 1),
    }


def phases_of(result: dict[str, Any]) -> dict[str, float | None]:
    """The seconds of each phase and window of one size, named as the table shows them."""
    atomic, concurrent = result["atomic"]["timings"], result["concurrent"]["timings"]
    rows = str(result["rows"])
    parallel, replicate = result.get("parallel", {}).get(rows, {}), result.get("replicate", {}).get(rows, {})
    return {
        "floor_conversion_s": result["floor"]["conversion_s"],
        "floor_index_s": result["floor"]["index_build_s"],
        "floor_total_s": result["floor"]["total_s"],
        "atomic_wall_s": result["atomic"]["wall_s"],
        "atomic_swap_s": atomic.get("swapSeconds"),
        "atomic_verify_s": atomic.get("verifySeconds"),
        "atomic_checklist_s": atomic.get("checklistSeconds"),
        "concurrent_wall_s": result["concurrent"]["wall_s"],
        "concurrent_reindex_s": concurrent.get("reindexSeconds"),
        "concurrent_blocked_s": concurrent.get("writeBlockedSeconds"),
        "parallel_wall_s": parallel.get("wall_s"),
        "parallel_blocked_s": parallel.get("lock_window_s"),
        "replicate_wall_s": replicate.get("wall_s"),
        "replicate_copy_s": replicate.get("copy_s"),
        "replicate_blocked_s": replicate.get("lock_window_s"),
        "backup_s": result.get("backup_s"),
        "cli_peak_rss_mb": result.get("cli_peak_rss_mb"),  # absent when the run was read back (--from)
        "operator_rss_after_a_run_mb": result["operator_rss_after_a_run_mb"],
    }


def exponent(n1: int, t1: float | None, n2: int, t2: float | None) -> float | None:
    """The fitted exponent between two (N, value) points: 1.0 grows linearly with N, 0.0 is flat."""
    if not t1 or not t2 or t1 <= 0 or t2 <= 0:
        return None
    return round(math.log(t2 / t1) / math.log(n2 / n1), 2)


def summary(sizes: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Phases by size, ratios to the floor, exponents between consecutive sizes, and the goals met or missed."""
    phases = {n: phases_of(result) for n, result in sorted(sizes.items())}
    ordered = sorted(phases)
    exponents = {
        f"{a}->{b}": {key: exponent(a, phases[a][key], b, phases[b][key]) for key in phases[b]}
        for a, b in itertools.pairwise(ordered)
    }
    largest = phases[ordered[-1]]
    ratios = {
        n: {
            "atomic_vs_floor": round(p["atomic_wall_s"] / p["floor_total_s"], 3),
            "atomic_work_vs_floor": round(
                (sizes[n]["atomic"]["timings"]["swapSeconds"] + sizes[n]["atomic"]["timings"].get("reindexSeconds", 0))
                / p["floor_total_s"], 3),
            "concurrent_vs_floor": round(p["concurrent_wall_s"] / p["floor_total_s"], 3),
            "concurrent_blocked_vs_conversion_floor": round(
                (p["concurrent_blocked_s"] or 0) / p["floor_conversion_s"], 3),
        }
        for n, p in phases.items()
    }  # fmt: skip
    last = ratios[ordered[-1]]
    small = phases[ordered[0]]
    goals = {
        f"atomic within {GOAL_VS_FLOOR}x the floor at {ordered[-1]:,} rows": last["atomic_vs_floor"] <= GOAL_VS_FLOOR,
        f"concurrent within {GOAL_VS_FLOOR}x the floor at {ordered[-1]:,} rows": last["concurrent_vs_floor"]
        <= GOAL_VS_FLOOR,
        "verify flat in the rows (within 1.5x of the smallest)": (largest["atomic_verify_s"] or 0)
        <= 1.5 * (small["atomic_verify_s"] or 0),
        "operator memory flat in the rows (within 1.5x)": largest["operator_rss_after_a_run_mb"]
        <= 1.5 * small["operator_rss_after_a_run_mb"],
    }
    if largest["cli_peak_rss_mb"] and small["cli_peak_rss_mb"]:
        goals["command line memory flat in the rows (within 1.5x)"] = (
            largest["cli_peak_rss_mb"] <= 1.5 * small["cli_peak_rss_mb"]
        )
    for name, key in (("Parallel", "parallel_blocked_s"), ("Replicate", "replicate_blocked_s")):
        measured = [p[key] for p in phases.values() if p[key] is not None]
        if measured:  # not measured with --inplace-only
            goals[f"{name}'s window flat in the rows (below 1 s at every size measured)"] = max(measured) < 1.0
    return {"phases": phases, "ratios": ratios, "exponents": exponents, "goals": goals}


def report(result: dict[str, Any]) -> None:
    """The table a person reads: phases by size, the ratios, and each goal met or missed."""
    phases = result["summary"]["phases"]
    keys = list(next(iter(phases.values())))
    print("\n" + f"{'':32}" + "".join(f"{int(n):>14,}" for n in phases))
    for key in keys:
        values = "".join(f"{(phases[n][key] if phases[n][key] is not None else float('nan')):14.3f}" for n in phases)
        print(f"{key:32}{values}")
    for n, ratio in result["summary"]["ratios"].items():
        print(f"{int(n):>10,} rows: " + ", ".join(f"{key} {value}" for key, value in ratio.items()))
    for pair, fitted in result["summary"]["exponents"].items():
        print(f"exponents {pair}: " + json.dumps(fitted))
    for goal, met in result["summary"]["goals"].items():
        print(f"  {'met   ' if met else 'MISSED'}  {goal}")


def main() -> None:
    """Every size, each in its own process; the summary written to bench/results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--inplace-only", action="store_true", help="the floor, InPlace and the operator alone")
    parser.add_argument(
        "--from", dest="earlier", type=Path, nargs="+", default=[],
        help="bench/run.py results already measured (one per size), read instead of run: no peak RSS then",
    )  # fmt: skip
    args = parser.parse_args()
    sizes: dict[int, dict[str, Any]] = {}
    for earlier in args.earlier:
        measured = json.loads(earlier.read_text())
        sizes[int(measured["rows"])] = measured
    with tempfile.TemporaryDirectory(prefix="vmig-scale-rows-") as directory:
        for rows in sorted(set(args.rows) - set(sizes)):
            print(f"{rows:,} rows x {args.dims}...", flush=True)
            sizes[rows] = one_size(rows, args.dims, Path(directory), inplace_only=args.inplace_only)
    result = {
        "date": max(str(r["date"]) for r in sizes.values()),  # when measured (a --from run's own date)
        "dims": args.dims,
        "machine": sizes[max(sizes)]["machine"],
        "sizes": {str(n): r for n, r in sizes.items()},
        "summary": summary(sizes),
    }
    suffix = "-inplace" if args.inplace_only else ""
    path = ROOT / "bench" / "results" / f"{result['date']}-scale-rows{suffix}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    report(result)
    print(f"\nwritten: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
