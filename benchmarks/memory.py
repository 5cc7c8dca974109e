"""Peak memory (resident set) of training the classic model and of importance-weighted evaluation.

    python benchmarks/memory.py [--out runs/memory]

Each command runs as its own process and its peak RSS is read from ``wait4``'s resource usage
(the kernel's ``ru_maxrss``, what ``/usr/bin/time -v`` reports as "Maximum resident set size"):

- the floor: a process that only imports vaelab and torch;
- ``vaelab train`` of the 784-400-20 model for one epoch of Fashion-MNIST (target: at most 1.5 GB);
- ``vaelab evaluate RUN --iw-samples K --limit 200`` for K = 100, 1000, 5000: with the K samples
  chunked, the peak should not grow with K.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

VAELAB = [sys.executable, "-m", "vaelab"]
TRAIN = ["train", "--dataset", "fashion-mnist", "--hidden", "400", "--latent-dim", "20", "--epochs", "1",
         "--no-plots", "--no-progress"]
IW_SAMPLES = (100, 1000, 5000)


def peak_rss_mb(command: list[str]) -> float:
    """Run ``command`` to completion; its peak resident set size in MB (10^6 bytes)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"failed ({process.returncode}): {' '.join(command)}")
    return usage.ru_maxrss * 1024 / 1e6  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/memory"), help="run directory to create (must not exist)")
    args = parser.parse_args()

    rows = [("import vaelab, torch (floor)", peak_rss_mb([sys.executable, "-c", "import torch, vaelab.cli"]))]
    rows.append(("vaelab " + " ".join(TRAIN), peak_rss_mb([*VAELAB, *TRAIN, "--out", str(args.out)])))
    for k in IW_SAMPLES:
        evaluate = ["evaluate", str(args.out), "--iw-samples", str(k), "--limit", "200", "--no-progress"]
        rows.append(("vaelab " + " ".join(evaluate), peak_rss_mb([*VAELAB, *evaluate])))
    print("| command | peak RSS (MB) |\n|---|---|")
    for command, mb in rows:
        print(f"| `{command}` | {mb:.0f} |")


if __name__ == "__main__":
    main()
