"""Native graph vs torch's TorchScript exporter: node count and µs per streaming step.

    .venv/bin/python bench/export_compare.py [--hidden 32] [--steps 3000]

Both graphs are built from the same random forecaster (hidden 32 by default) and run with
onnxruntime on one thread, batch 1, time 1, state carried between calls: the streaming case.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
import torch

from rnnstream.export import build_graph
from rnnstream.export.torchscript import build_graph_torchscript
from rnnstream.runtime.contract import CELL_STATES, state_input_name, state_output_name
from rnnstream.train.model import Forecaster, ForecasterConfig


def _session(graph) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(graph.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def us_per_step(graph, cell: str, layers: int, hidden: int, steps: int) -> float:
    sess = _session(graph)
    names = CELL_STATES[cell]
    feeds = {state_input_name(s): np.zeros((1, layers, hidden), np.float32) for s in names}
    outs = ["y", *(state_output_name(s) for s in names)]
    x = np.random.default_rng(0).standard_normal((steps, 1, 1, 1)).astype(np.float32)
    timings = []
    for _ in range(3):  # best of three medians-of-blocks, to ride out noise on shared machines
        start = time.perf_counter()
        for t in range(steps):
            result = sess.run(outs, {"x": x[t], **feeds})
            feeds = {state_input_name(s): v for s, v in zip(names, result[1:], strict=True)}
        timings.append((time.perf_counter() - start) / steps * 1e6)
    return min(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"{'cell':<5} {'layers':>6} {'native nodes':>13} {'torchscript nodes':>18} "
          f"{'native µs/step':>15} {'torchscript µs/step':>20}")
    for cell in ("rnn", "lstm", "gru"):
        for layers in (1, 2):
            model = Forecaster(ForecasterConfig(cell=cell, hidden=args.hidden, layers=layers))
            model.eval()
            graphs = [build_graph(model), build_graph_torchscript(model)]
            nodes = [len(g.graph.node) for g in graphs]
            us = [us_per_step(g, cell, layers, args.hidden, args.steps) for g in graphs]
            print(f"{cell:<5} {layers:>6} {nodes[0]:>13} {nodes[1]:>18} "
                  f"{us[0]:>15.1f} {us[1]:>20.1f}")


if __name__ == "__main__":
    main()
