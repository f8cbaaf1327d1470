"""Run every benchmark in this folder and print their tables (``make bench``).

Each benchmark measures its baselines in the same run and prints ratios against them; none of
them is a timed test. Pass ``--quick`` for fewer iterations; pass ``--only NAME`` to run one.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = {
    "runtime": ["bench_runtime.py"],  # Predictor / StreamPool vs raw onnxruntime and torch eager
    "export": ["export_compare.py"],  # native graph vs torch's TorchScript exporter
    "spark": ["bench_spark.py"],  # Spark local mode vs StreamPool in one process
    # rnnstream serve on loopback: latency, batching, many sequences per request, short soak
    "serve": ["bench_serve.py", "--soak-seconds", "20"],
    # one model served by rnnstream, MLServer and PyTriton, one client (.venv-peers on first use)
    "peers": ["bench_peers.py"],
    "quality": ["quality.py"],  # default training on real series vs persistence and ETS
    "web": ["bench_web.py"],  # step latency in the browser (onnxruntime-web) vs Node vs Python
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations")
    ap.add_argument("--only", choices=sorted(BENCHES), action="append",
                    help="run only this benchmark (repeatable)")
    args = ap.parse_args()
    failed = []
    for name in args.only or BENCHES:
        script = HERE / BENCHES[name][0]
        if not script.exists():
            print(f"== {name}: {script.name} not found, skipped")
            continue
        print(f"\n== {name}: {script.name}", flush=True)
        quick = ["--quick"] if args.quick and name not in ("export", "quality") else []
        cmd = [sys.executable, str(script), *BENCHES[name][1:], *quick]
        if subprocess.run(cmd, check=False).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
