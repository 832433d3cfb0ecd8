"""Run every benchmark, one after the other, each printing its table and writing its JSON.

    HPSWEEP_DATA_ROOT=../shared/data python benchmarks/run_all.py [--quick]

Benchmarks share the machine with nothing else of ours: run them on a quiet machine, and
quote the ratios (each measured side by side within one script), not the absolute times.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
BENCHMARKS = [
    "data_path.py",
    "conv_precision.py",
    "step_overhead.py",
    "sweep_speed.py",
    "startup.py",
    "race.py",
    "search_efficiency.py",
    "accuracy_anchor.py",
    "compare_scale.py",
    "sweep_scale.py",
    "fused_trials.py",
    "fused_sweep.py",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs of each")
    args = parser.parse_args()
    failed = []
    for script in BENCHMARKS:
        print(f"\n== {script} ==", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(HERE / script), *(["--quick"] * args.quick)])
        print(f"({script}: {time.perf_counter() - start:.0f} s)", flush=True)
        if code != 0:
            failed.append(script)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
