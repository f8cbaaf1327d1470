"""Run one fuzz harness under atheris (coverage-guided, libFuzzer):

    python fuzz/run.py NAME [libFuzzer flags] [CORPUS_DIR ...]
    python fuzz/run.py log -max_total_time=300 fuzz/corpus/log

NAME is a key of fuzz/harnesses.py's HARNESSES. A finding (an exception the harness does not
allow, or a crash) stops the run with a crash-* file holding the input. `make fuzz` runs every
harness for FUZZ_SECONDS (default 300) on its corpus, which grows with what it finds.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["rnnstream", "harnesses"]):
    import harnesses

    import rnnstream.cli.stream_cmd
    import rnnstream.runtime
    import rnnstream.runtime.wal
    import rnnstream.serve.http
    import rnnstream.serve.protocol
    import rnnstream.serve.wal  # noqa: F401


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in harnesses.HARNESSES:
        sys.exit(f"usage: run.py NAME [libFuzzer flags]; NAME is one of "
                 f"{sorted(harnesses.HARNESSES)}")
    harness = harnesses.HARNESSES[sys.argv[1]]
    warnings.simplefilter("ignore")  # a mutated model's load warnings are not findings
    atheris.Setup([sys.argv[0], *sys.argv[2:]], harness)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
