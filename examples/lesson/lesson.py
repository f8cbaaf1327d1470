"""From the classic "RNNs for time series" lesson to a streaming rnnstream model.

The first half is the lesson's own notebook, as it is taught: its ``RNN`` class (verbatim), a
sine wave cut into windows of 20 points, and a training loop that carries the hidden state from
one window to the next as ``hidden.data``. The second half is what rnnstream adds, in 4 lines:
``export_module`` (parity proof against the module itself, the contract, interval quantiles from
the sample) and a ``Predictor`` that takes one point in and gives one prediction out.

    python examples/lesson/lesson.py --out lesson-out
    rnnstream inspect lesson-out/sine.onnx
    rnnstream stream lesson-out/sine.onnx --coverage 0.9 < lesson-out/held_out.csv
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from torch import nn


# -- the lesson's notebook, as taught -----------------------------------------------------------
class RNN(nn.Module):
    def __init__(self, input_size, output_size, hidden_dim, n_layers):
        super(RNN, self).__init__()  # noqa: UP008 - the lesson's own words

        self.hidden_dim = hidden_dim

        # define an RNN with specified parameters
        # batch_first means that the first dim of the input and output will be the batch_size
        self.rnn = nn.RNN(input_size, hidden_dim, n_layers, batch_first=True)

        # last, fully-connected layer
        self.fc = nn.Linear(hidden_dim, output_size)

    def forward(self, x, hidden):
        # x (batch_size, seq_length, input_size)
        # hidden (n_layers, batch_size, hidden_dim)
        # r_out (batch_size, time_step, hidden_size)
        batch_size = x.size(0)  # noqa: F841 - the lesson's own words

        # get RNN outputs
        r_out, hidden = self.rnn(x, hidden)
        # shape output to be (batch_size*seq_length, hidden_dim)
        r_out = r_out.view(-1, self.hidden_dim)

        # get final output
        output = self.fc(r_out)

        return output, hidden


def train(rnn, n_steps, seq_length=20, print_every=25):
    """The lesson's loop: each step is the next window of pi of the sine wave."""
    criterion = nn.MSELoss()
    optimizer = torch.optim.Adam(rnn.parameters(), lr=0.01)
    hidden = None
    for batch_i, step in enumerate(range(n_steps)):
        # defining the training data
        time_steps = np.linspace(step * np.pi, (step + 1) * np.pi, seq_length + 1)
        data = np.sin(time_steps)
        data.resize((seq_length + 1, 1))  # input_size=1

        x = data[:-1]
        y = data[1:]

        # convert data into Tensors
        x_tensor = torch.Tensor(x).unsqueeze(0)  # unsqueeze gives a 1, batch_size dimension
        y_tensor = torch.Tensor(y)

        # outputs from the rnn
        prediction, hidden = rnn(x_tensor, hidden)

        ## Representing Memory ##
        # make a new variable for hidden and detach the hidden state from its history
        # this way, we don't backpropagate through the entire history
        hidden = hidden.data

        # calculate the loss
        loss = criterion(prediction, y_tensor)
        # zero gradients
        optimizer.zero_grad()
        # perform backprop and update weights
        loss.backward()
        optimizer.step()

        if batch_i % print_every == 0:
            print(f"Loss: {loss.item():.6f}")
    return rnn


# -- what rnnstream adds ------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="lesson-out", help="folder for the model and data")
    parser.add_argument("--steps", type=int, default=75, help="training steps (lesson: 75)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)  # the lesson does not seed; seeded here so the figures repeat

    rnn = train(RNN(input_size=1, output_size=1, hidden_dim=32, n_layers=1), args.steps)

    # the series the model was trained on: the sine at 20 points per pi (as the lesson's data)
    series = np.sin(np.linspace(0, 40 * np.pi, 40 * 20 + 1)).astype(np.float32)[:, None]
    held_out = np.sin(np.linspace(40 * np.pi, 50 * np.pi, 10 * 20 + 1)).astype(np.float32)

    from rnnstream.export import export_module
    from rnnstream.runtime import Predictor

    path = os.path.join(args.out, "sine.onnx")
    report = export_module(rnn, path, sample=series, features=["sin"])
    print(report.summary())

    p = Predictor(path, coverage=0.9)
    p.prime(series[:, 0])  # carry the state through the training range, as a stream would
    ys = np.array([p.step(float(v)) for v in held_out])

    # the module itself, stepped one point at a time with its carried state (torch, float32)
    hidden, want = None, []
    with torch.no_grad():
        _, hidden = rnn(torch.from_numpy(series)[None], hidden)
        for v in held_out:
            out, hidden = rnn(torch.tensor([[[float(v)]]]), hidden)
            want.append(float(out[0, 0]))
    lower, upper = p.interval()
    err = np.abs(ys[:-1] - held_out[1:])
    print(f"streamed {len(ys)} held-out points: max |runtime - the lesson's module| = "
          f"{np.max(np.abs(ys - np.array(want))):.3g}; MAE {err.mean():.4f} (persistence "
          f"{np.abs(held_out[:-1] - held_out[1:]).mean():.4f}); next point in "
          f"[{float(lower):.3f}, {float(upper):.3f}] (90 %)")
    with open(os.path.join(args.out, "held_out.csv"), "w") as f:
        f.write("sin\n" + "".join(f"{v:.6f}\n" for v in held_out))
    print(f"model: {path}\nheld-out points: {os.path.join(args.out, 'held_out.csv')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
