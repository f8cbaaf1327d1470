"""Crash safety: SIGKILL at random moments never leaves a snapshot that is unreadable, half
written, or anything but the exact state after some step of the uninterrupted run.

Two writers are killed: ``Predictor.save_state`` after every step (forked children of
``_crash_child.py``, 120 kills, with a slowed fsync so kills often land inside a save), and the
``rnnstream stream --state --durability snapshot`` command (fresh processes, its save slowed
the same way; each run reads the next chunk of lines, so the log's input position is not used
here: tests/cli/test_stream_resume.py kills the default ``--durability log``).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rnnstream.runtime import Predictor

from .conftest import assert_same_state

HERE = Path(__file__).parent
STEPS = 6000
KILLS = 120


@pytest.fixture(scope="module")
def reference(models, tmp_path_factory):
    """The uninterrupted run: inputs, predictions and the state after every step (0..STEPS)."""
    folder = tmp_path_factory.mktemp("crash-ref")
    model = models["uni"]
    mean, std = model.model.x_mean.item(), model.model.x_std.item()
    xs = (mean + std * np.random.default_rng(3).standard_normal(STEPS)).astype(np.float32)
    p = Predictor(model.path)
    states = [p.get_state()]
    ys = np.empty(STEPS, np.float32)
    for i, x in enumerate(xs):
        ys[i] = p.step(float(x))
        states.append(p.get_state())
    arrays = {f"state.{n}": np.stack([s[n] for s in states]) for n in states[0]}
    arrays["last_output"] = np.stack([np.zeros(1, np.float32)]
                                     + [s.last_output for s in states[1:]])
    np.save(folder / "xs.npy", xs)
    np.savez(folder / "refs.npz", **arrays)
    return {"path": model.path, "xs": xs, "ys": ys, "states": states, "folder": folder}


def _check_resume(path, snapshot, ref, step: int, more: int = 3) -> None:
    """Load ``snapshot``: it must be the reference state after ``step`` steps, and stepping on
    from it must give the reference predictions bit for bit."""
    p = Predictor(path)
    p.load_state(snapshot)
    assert_same_state(p.get_state(), ref["states"][step])
    np.testing.assert_array_equal(p.get_state().last_output, ref["states"][step].last_output)
    for j in range(step, min(step + more, STEPS)):
        assert np.float32(p.step(float(ref["xs"][j]))).tobytes() == ref["ys"][j].tobytes()


@pytest.mark.slow
def test_predictor_snapshots_survive_sigkill(reference, tmp_path, figures):
    ref = reference
    out = subprocess.run(
        [sys.executable, str(HERE / "_crash_child.py"), str(ref["path"]),
         str(ref["folder"] / "xs.npy"), str(ref["folder"] / "refs.npz"), str(tmp_path),
         str(KILLS), "11"],
        capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    rounds = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rounds) == KILLS, out.stderr
    assert all(r["step"] >= 0 for r in rounds), "a snapshot matched no step of the run"
    assert all(r["step"] >= r["before"] for r in rounds), "a snapshot went back in time"
    verified = 0
    for r in rounds:
        if r["copy"]:
            _check_resume(ref["path"], r["copy"], ref, r["step"])
            verified += 1
    killed = sum(r["killed"] for r in rounds)
    in_save = sum(r["temp_left"] > 0 for r in rounds)
    figures("crash.predictor", kills=killed, inside_save=in_save,
            before_first_new_save=sum(r["step"] == r["before"] for r in rounds),
            snapshots_verified=verified, steps_reached=rounds[-1]["step"])
    assert killed == KILLS
    assert verified >= KILLS - 5  # only the first rounds may die before any snapshot exists
    assert rounds[-1]["step"] > 100  # the chain of resumed children made progress
    # temp files of killed saves are swept by the next save: they never pile up (at most the
    # last victim's, plus one from a child killed before its first save)
    assert in_save > 10
    assert max(r["leftovers"] for r in rounds) <= 2


# -- the stream command -------------------------------------------------------------------------
CLI_RUNS = 24
CHUNK = 200
# The command, with os.fsync slowed to widen the window in which a kill lands inside the save.
CLI = ("import os, sys, time\n"
       "_fsync = os.fsync\n"
       "def slow(fd):\n"
       "    time.sleep(0.05)\n"
       "    _fsync(fd)\n"
       "os.fsync = slow\n"
       "from rnnstream.cli.main import main\n"
       "sys.exit(main(sys.argv[1:]))\n")


def _cli(model, state, lines, folder) -> subprocess.Popen:
    (folder / "in.txt").write_text("".join(f"{float(x)!r}\n" for x in lines))
    return subprocess.Popen(
        [sys.executable, "-c", CLI, "stream", str(model), "--input", str(folder / "in.txt"),
         "--state", str(state), "--durability", "snapshot"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_stream_command_state_survives_sigkill(reference, tmp_path, figures):
    ref = reference
    state = tmp_path / "s.npz"
    rng = random.Random(5)
    pos, phases = 0, {"killed": 0, "inside_save": 0, "completed": 0}
    for _ in range(CLI_RUNS):
        proc = _cli(ref["path"], state, ref["xs"][pos:pos + CHUNK], tmp_path)
        time.sleep(rng.uniform(0.15, 0.8))
        proc.kill()
        _, err = proc.communicate(timeout=60)
        temps = list(tmp_path.glob(f".s.npz.{proc.pid}.*.rnnstream-tmp"))
        phases["killed" if proc.returncode == -9 else "completed"] += 1
        phases["inside_save"] += bool(temps)
        assert len(list(tmp_path.glob("*.rnnstream-tmp"))) <= 2  # swept by the next save
        assert proc.returncode in (0, -9), err
        if state.exists():  # the old state or the new one, never anything else
            new = pos + CHUNK if proc.returncode == 0 else None
            p = Predictor(ref["path"])
            p.load_state(state)
            got = p.get_state()
            matches = [k for k in (pos, pos + CHUNK) if _same(got, ref["states"][k])]
            assert matches, f"the state file holds neither step {pos} nor {pos + CHUNK}: {err}"
            assert new is None or matches == [new]
            pos = matches[-1]
    # resume from what is left with the remaining lines: exactly the reference predictions
    proc = _cli(ref["path"], state, ref["xs"][pos:pos + CHUNK], tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    got = np.array([float(v) for v in out.split()], np.float32)
    assert got.tobytes() == ref["ys"][pos:pos + CHUNK].tobytes()
    figures("crash.cli", runs=CLI_RUNS, **phases, lines_reached=pos)
    assert phases["killed"] + phases["completed"] == CLI_RUNS


def _same(a, b) -> bool:
    try:
        assert_same_state(a, b)
    except AssertionError:
        return False
    return True
