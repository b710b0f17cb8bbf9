"""Break each named feature on purpose, run its tests, and report which mutants the tests kill.

    python -m tests.mutation.mutate                      # every mutant in tests/mutation/mutants.py
    python -m tests.mutation.mutate resume_ignored ...   # only these
    python -m tests.mutation.mutate --list

Each mutant runs in its own ``pytest -n 0 -p tests.mutation.mutants`` process with
``CONTRASTIVE_MUTANT=<name>``, on its own small test selection. It is *killed* when a test of
the selection fails, *survived* when they all pass, and an *error* when pytest could not run
them (a bad selection: no test collected, a usage error). First the union of the selections runs
once without a mutant: a selection that fails on the intact code kills nothing. Prints a table,
writes the same as JSON (``--json``), and exits 1 if a mutant survived or errored.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Sequence

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.mutation.mutants import ENV, MUTANTS  # noqa: E402 - after the path is set


def run_pytest(tests: Sequence[str], mutant: str | None) -> Dict[str, object]:
    """One pytest process on ``tests`` with ``mutant`` applied (None: intact); outcome counts."""
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if mutant:
        env[ENV] = mutant
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "report.xml"
        cmd = [sys.executable, "-m", "pytest", "-n", "0", "-q", "-p", "no:cacheprovider", "-p", "tests.mutation.mutants",
               f"--junitxml={xml}", *tests]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = round(time.perf_counter() - start, 1)
        failed: List[str] = []
        passed = 0
        if xml.is_file():
            for case in ET.parse(xml).getroot().iter("testcase"):
                problem = case.find("failure") if case.find("failure") is not None else case.find("error")
                if problem is not None:  # the test, and the first line of why it failed
                    why = (problem.get("message") or "").strip().splitlines()[:1]
                    failed.append(f"{case.get('classname')}::{case.get('name')}: {''.join(why)[:200]}")
                elif case.find("skipped") is None:
                    passed += 1
    return {"returncode": proc.returncode, "failed": failed, "passed": passed, "seconds": seconds,
            "tail": proc.stdout.strip().splitlines()[-3:] + proc.stderr.strip().splitlines()[-3:]}


def verdict(outcome: Dict[str, object]) -> str:
    """killed (a test failed), survived (all passed) or error (pytest could not run them)."""
    if outcome["returncode"] == 1 and outcome["failed"]:
        return "killed"
    if outcome["returncode"] == 0:
        return "survived"
    return "error"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mutants", nargs="*", help=f"mutants to run (default: all): {', '.join(MUTANTS)}")
    parser.add_argument("--list", action="store_true", help="list the mutants and their tests, run nothing")
    parser.add_argument("--json", default=str(ROOT / "outputs" / "mutation.json"), help="where the JSON report goes")
    parser.add_argument("--no-clean-run", action="store_true", help="skip the run of the selections without a mutant")
    args = parser.parse_args(argv)
    unknown = [m for m in args.mutants if m not in MUTANTS]
    if unknown:
        parser.error(f"unknown mutant {unknown[0]!r}; valid choices: {', '.join(MUTANTS)}")
    chosen = [MUTANTS[m] for m in (args.mutants or MUTANTS)]
    if args.list:
        for m in chosen:
            print(f"{m.name}: {m.feature}\n    {' '.join(m.tests)}")
        return 0
    report: Dict[str, object] = {"mutants": []}
    if not args.no_clean_run:
        files = sorted({t for m in chosen for t in m.tests if t.startswith("tests/")})  # -k selections: their whole file
        clean = run_pytest(files, None)
        report["clean"] = clean
        print(f"without a mutant: {clean['passed']} passed, {len(clean['failed'])} failed ({clean['seconds']} s)", flush=True)
        if clean["returncode"] != 0:
            print("the selections fail on the intact code: fix them first\n" + "\n".join(clean["failed"] or clean["tail"]))
            return 2
    for m in chosen:
        outcome = run_pytest(m.tests, m.name)
        row = {"mutant": m.name, "feature": m.feature, "tests": list(m.tests), "result": verdict(outcome), **outcome}
        report["mutants"].append(row)
        print(f"{m.name:30s} {row['result']:9s} {len(outcome['failed'])}/{len(outcome['failed']) + outcome['passed']} "
              f"tests failed  {outcome['seconds']:6.1f} s", flush=True)
    rows = report["mutants"]
    print("\n| mutant | result | tests failed | seconds | feature broken |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mutant']} | {r['result']} | {len(r['failed'])}/{len(r['failed']) + r['passed']} | {r['seconds']} | {r['feature']} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    not_killed = [r["mutant"] for r in rows if r["result"] != "killed"]
    print(f"\n{len(rows) - len(not_killed)} of {len(rows)} killed" + (f"; not killed: {', '.join(not_killed)}" if not_killed else "")
          + f"; JSON: {args.json}")
    return 1 if not_killed else 0


if __name__ == "__main__":
    sys.exit(main())
