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
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "tests/test_fuzz_cli.py"], cwd=REPO, env=env, capture_output=True, text=True)
    sys.path.insert(0, str(REPO))
    from tests.test_fuzz_cli import COMMANDS

    print(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-2000:])
    print(f"{len(COMMANDS)} subcommands x {a.examples} examples = {len(COMMANDS) * a.examples} invocations "
          f"in {time.perf_counter() - t0:.0f} s; pytest exit status {r.returncode}")
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
