"""Benchmark: a long property-based search of the command line (issue #16).

    python benchmarks/fuzz_cli.py [--examples 2000]

Runs tests/test_fuzz_cli.py with STARCENTER_FUZZ_EXAMPLES examples per subcommand (the default
suite runs 25) and prints how many invocations were tried and how many failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=2000, help="examples per subcommand")
    a = ap.parse_args()
    env = {**os.environ, "STARCENTER_FUZZ_EXAMPLES": str(a.examples)}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                        "tests/test_fuzz_cli.py"], cwd=REPO, env=env, capture_output=True, text=True)
    total = 0
    for line in r.stdout.splitlines():
        if "fuzz " in line:
            print(line[line.index("fuzz "):])
            total += int(line[line.index("fuzz "):].split(": ")[1].split()[0])
    sys.path.insert(0, str(REPO))
    from tests.test_fuzz_cli import COMMANDS

    print(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-2000:])
    print(f"{total} invocations over {len(COMMANDS)} subcommands (up to {a.examples} each; Hypothesis stops "
          f"early where it has tried every distinct case) in {time.perf_counter() - t0:.0f} s; "
          f"pytest exit status {r.returncode}")
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
