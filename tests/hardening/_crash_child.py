"""Kill a streaming, snapshotting process with SIGKILL, again and again (run as a script).

    python _crash_child.py MODEL INPUTS.npy REFS.npz WORKDIR KILLS SEED

This process imports the runtime but creates no session and starts no thread, so ``os.fork``
is safe here (pytest's process has torch loaded; forking it would not be). Each round forks a
child that loads the snapshot (if any), streams on from the step it holds and saves after
every step, with a slowed ``fsync`` so that kills often land inside ``save_state``; after a
random delay the child is SIGKILLed. The snapshot left behind is copied aside for the test to
verify, and the step it holds (found by matching the reference states bit for bit) is where
the next child resumes. One JSON line on stdout describes every round.
"""

from __future__ import annotations

import glob
import json
import os
import random
import shutil
import signal
import sys
import time

import numpy as np

SLOW_FSYNC_S = 0.002


def state_key(arrays) -> bytes:
    names = sorted(k for k in arrays if k.startswith("state.") or k == "last_output")
    return b"".join(np.ascontiguousarray(arrays[k]).tobytes() for k in names)


def child(model: str, xs: np.ndarray, snap: str, start: int) -> None:
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        time.sleep(SLOW_FSYNC_S)
        real_fsync(fd)

    os.fsync = slow_fsync
    from rnnstream.runtime import Predictor

    p = Predictor(model)
    if os.path.exists(snap):
        p.load_state(snap)
    for x in xs[start:]:
        p.step(float(x))
        p.save_state(snap)


def main(model: str, inputs: str, refs: str, workdir: str, kills: int, seed: int) -> None:
    # import before forking, not in every child: the runtime package is lazy, so name what the
    # child uses (Predictor loads numpy and onnxruntime); otherwise each child spends its life
    # importing and is killed before its first save
    from rnnstream.runtime import Predictor  # noqa: F401

    xs = np.load(inputs)
    with np.load(refs) as z:
        index = {}
        for k in range(z["state.h"].shape[0]):
            arrays = {n: z[n][k] for n in z.files if n.startswith("state.")}
            if k:
                arrays["last_output"] = z["last_output"][k]
            index.setdefault(state_key(arrays), k)
    rng = random.Random(seed)
    snap = os.path.join(workdir, "s.npz")
    step = 0
    for i in range(kills):
        pid = os.fork()
        if pid == 0:
            try:
                child(model, xs, snap, step)
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.008, 0.06))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        # temp files of a killed save are left for the next writer's sweep (never deleted
        # here): the test checks they do not pile up
        temps = glob.glob(os.path.join(workdir, f".s.npz.{pid}.*.rnnstream-tmp"))
        leftovers = len(glob.glob(os.path.join(workdir, "*.rnnstream-tmp")))
        before, copy = step, None
        if os.path.exists(snap):
            copy = os.path.join(workdir, f"kill{i:03d}.npz")
            shutil.copyfile(snap, copy)
            with np.load(snap, allow_pickle=False) as z:
                step = index.get(state_key({n: z[n] for n in z.files}), -1)
        print(json.dumps({"round": i, "killed": os.WIFSIGNALED(status), "temp_left": len(temps),
                          "leftovers": leftovers, "before": before, "step": step,
                          "copy": copy}), flush=True)
        if step < 0:
            return


if __name__ == "__main__":
    m, inp, ref, work, n, s = sys.argv[1:7]
    main(m, inp, ref, work, int(n), int(s))
