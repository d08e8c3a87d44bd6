"""Issue 12's chaos benchmark in one command: the run store under random SIGKILLs and shared
by several processes (chaos_store.py), then fuzzed inputs (chaos_fuzz.py). Prints both tables;
exits 1 if either found a lost epoch, a mismatch, a traceback, a hang or an unclear refusal.

    python bench/chaos.py            # the full figures: 50 kills, 4 x 10 runs, 1,400 inputs
    python bench/chaos.py --quick    # a minute or two: 3 kills, 2 x 2 runs, 80 inputs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import chaos_fuzz  # noqa: E402
import chaos_store  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the suite-sized version")
    p.add_argument("--seed", type=int, default=0, help="seed of the kills and the mutations")
    a = p.parse_args(argv)
    seed = ["--seed", str(a.seed)]
    store_args = ["--kills", "3", "--procs", "2", "--runs", "2"] if a.quick else []
    fuzz_args = (["--specs", "50", "--data", "20", "--images", "10", "--sources", "10"]
                 if a.quick else [])
    print("== the run store: random kills and concurrency (chaos_store.py)", flush=True)
    bad_store = chaos_store.main(store_args + seed)
    print("\n== fuzzed inputs (chaos_fuzz.py)", flush=True)
    bad_fuzz = chaos_fuzz.main(fuzz_args + seed)
    return 1 if bad_store or bad_fuzz else 0


if __name__ == "__main__":
    sys.exit(main())
