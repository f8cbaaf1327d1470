"""Users' own torch modules, as people write them (shared by the export, CLI and serve tests).

``LessonRNN`` is the classic "RNNs for time series" lesson's class, verbatim (only renamed): its
``r_out.view(-1, hidden_dim)`` works for one stream at a time only (torch's batch-first RNN
output is contiguous for batch 1 alone), which rnnstream must cope with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


class LessonRNN(nn.Module):
    def __init__(self, input_size, output_size, hidden_dim, n_layers):
        super(LessonRNN, self).__init__()  # noqa: UP008 - the lesson's own words
        self.hidden_dim = hidden_dim
        self.rnn = nn.RNN(input_size, hidden_dim, n_layers, batch_first=True)
        self.fc = nn.Linear(hidden_dim, output_size)

    def forward(self, x, hidden):
        # x (batch_size, seq_length, input_size); hidden (n_layers, batch_size, hidden_dim)
        batch_size = x.size(0)  # noqa: F841 - the lesson's own words
        r_out, hidden = self.rnn(x, hidden)
        r_out = r_out.view(-1, self.hidden_dim)  # (batch_size*seq_length, hidden_dim)
        output = self.fc(r_out)
        return output, hidden


class LessonLSTM(nn.Module):
    """The lesson's LSTM variant: the hidden state is a tuple (h, c)."""

    def __init__(self, input_size, output_size, hidden_dim, n_layers):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.lstm = nn.LSTM(input_size, hidden_dim, n_layers, batch_first=True)
        self.fc = nn.Linear(hidden_dim, output_size)

    def forward(self, x, hidden):
        r_out, hidden = self.lstm(x, hidden)
        return self.fc(r_out.reshape(-1, self.hidden_dim)), hidden


class TimeFirstGRU(nn.Module):
    """Time-first 2-layer GRU with a Linear-Tanh-Linear head: x [T, B, F] -> y [T, B, K]."""

    def __init__(self, n_features=1, hidden=24, layers=2, n_targets=1):
        super().__init__()
        self.gru = nn.GRU(n_features, hidden, layers)
        self.head = nn.Sequential(nn.Linear(hidden, 16), nn.Tanh(), nn.Linear(16, n_targets))

    def forward(self, x, h=None):
        out, h = self.gru(x, h)
        return self.head(out), h


class WithDropout(nn.Module):
    """Dropout between layers and before the head: exported in eval mode (dropout off)."""

    def __init__(self, hidden=20):
        super().__init__()
        self.lstm = nn.LSTM(1, hidden, 2, batch_first=True, dropout=0.3)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(hidden, 1)

    def forward(self, x, state):
        out, state = self.lstm(x, state)
        return self.fc(self.drop(out)), state


class ThreeFeatures(nn.Module):
    """3 features in, 2 targets out, a ReLU head."""

    def __init__(self, hidden=16):
        super().__init__()
        self.rnn = nn.LSTM(3, hidden, 1, batch_first=True)
        self.head = nn.Sequential(nn.Linear(hidden, 8), nn.ReLU(), nn.Dropout(0.1),
                                  nn.Linear(8, 2))

    def forward(self, x, state):
        out, state = self.rnn(x, state)
        return self.head(out), state


class SkipConnection(nn.Module):
    """Not made of parts rnnstream rebuilds: y adds the input back (traced instead)."""

    def __init__(self, hidden=12):
        super().__init__()
        self.gru = nn.GRU(1, hidden, 1, batch_first=True)
        self.fc = nn.Linear(hidden, 1)

    def forward(self, x, h):
        out, h = self.gru(x, h)
        return self.fc(out) + 0.5 * x, h


def sine(n: int = 400, features: int = 1, scale: float = 1.0, offset: float = 0.0
         ) -> np.ndarray:
    """[n, features] float32: phase-shifted sines (plus noise), at ``offset + scale * ...``."""
    rng = np.random.default_rng(0)
    t = np.arange(n)[:, None] * 0.1 + np.arange(features)[None, :]
    return (offset + scale * (np.sin(t) + 0.05 * rng.standard_normal((n, features)))
            ).astype(np.float32)


def train_lesson(model: nn.Module, series: np.ndarray, steps: int = 60, seq: int = 20,
                 seed: int = 0) -> nn.Module:
    """Train as the lesson does: windows of ``seq`` points, the hidden state carried from one
    window to the next as ``hidden.data`` (detached), batch 1, MSE, Adam."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    hidden = None
    for i in range(steps):
        start = (i * seq) % (len(series) - seq - 1)
        x = torch.from_numpy(series[start:start + seq])[None]
        y = torch.from_numpy(series[start + 1:start + seq + 1, :1])
        out, hidden = model(x, hidden)
        hidden = tuple(h.data for h in hidden) if isinstance(hidden, tuple) else hidden.data
        loss = nn.functional.mse_loss(out.reshape(-1, out.shape[-1])[:, :1], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


# -- the user's models every consumer streams (tests/*/test_byom_*.py) ------------------------
# name -> (the module, trained where the lesson trains it; export_module's keywords)
BYOM: dict[str, tuple] = {
    # the lesson's RNN verbatim, trained as the lesson trains it, its feature named by the user
    "lesson_rnn": (lambda: train_lesson(LessonRNN(1, 1, 32, 1), sine()), {"features": ["value"]}),
    # the LSTM variant (tuple state h, c), feature names left to the default (f0)
    "lesson_lstm": (lambda: train_lesson(LessonLSTM(1, 1, 32, 2), sine()), {}),
    # not recognised: traced, cell "custom", its one declared state named h
    "traced_skip": (lambda: SkipConnection(), {}),
}
_BYOM_FILES: dict[str, Path] = {}


def byom_model(name: str, tmp_path_factory) -> Path:
    """Path of BYOM[name]'s model.onnx (sidecar beside it; step graph where recognised), exported
    with ``sample=sine()`` (so its contract carries metrics["calibration"]) once per test
    session, whichever test folder asks first."""
    if name not in _BYOM_FILES:
        make, kw = BYOM[name]
        from rnnstream.export import export_module

        torch.manual_seed(sorted(BYOM).index(name))
        path = tmp_path_factory.mktemp(f"byom-{name}") / "model.onnx"
        export_module(make(), path, sample=sine(), **kw)
        _BYOM_FILES[name] = path
    return _BYOM_FILES[name]
