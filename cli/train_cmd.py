"""`rnnstream train`: train a forecaster, write model.pt and training.png, print the metrics.

``train_to_dir`` is the reusable part (``rnnstream demo`` calls it); torch is imported lazily
so ``rnnstream --help`` works on a base install.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from rnnstream.runtime import spec
from rnnstream.runtime.spec import CELLS

from ._common import fail, require_train_extra

if TYPE_CHECKING:  # pragma: no cover
    from rnnstream.train import ForecasterConfig, Series, TrainConfig, TrainResult

DESCRIPTION = """\
Train a recurrent forecaster (RNN, LSTM or GRU) to predict the targets --horizon steps ahead.
The data is the built-in sine demo or a CSV file with a header row, one row per time step.
The last --val-fraction of the series validates (chronological split); normalisation is fitted
on the training part only and stored in the model. Writes OUT/NAME (the checkpoint, for
'rnnstream export') and OUT/training.png (loss curves, predicted vs actual), and prints the
validation metrics of the model next to the naive persistence forecast (next = last value).
"""

EPILOG = """\
examples:
  rnnstream train --data sine --out runs/sine
  rnnstream train --data sales.csv --features price,demand --targets demand --horizon 3 \\
      --cell gru --hidden 64 --epochs 100 --out runs/sales

target modes: 'level' predicts the value, 'delta' its change from the last observed value
(needs each target among the features); 'auto' trains both and keeps the better one.
"""


@dataclass(frozen=True)
class TrainOutput:
    result: TrainResult
    checkpoint: Path
    plot: Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a forecaster on the sine demo or a CSV file",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = p.add_argument_group("data")
    data.add_argument("--data", default="sine", metavar="sine|PATH.csv",
                      help="'sine' (built-in demo) or a CSV file (default: sine)")
    data.add_argument("--features", metavar="A,B", help="input columns (default: all numeric)")
    data.add_argument("--targets", metavar="C", help="columns to predict (default: the features)")
    data.add_argument("--horizon", type=int, default=1, metavar="K",
                      help="predict K steps ahead (default: 1)")
    data.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                      help="last fraction of the series used for validation (default: 0.2)")
    model = p.add_argument_group("model")
    model.add_argument("--cell", default="lstm", choices=sorted(CELLS))
    model.add_argument("--hidden", type=int, default=32, help="hidden units (default: 32)")
    model.add_argument("--layers", type=int, default=1, help="recurrent layers, 1-3 (default: 1)")
    model.add_argument("--dropout", type=float, default=0.0,
                       help="dropout between layers (default: 0)")
    model.add_argument("--target-mode", default="auto",
                       choices=("auto", *spec.TARGET_MODES),
                       help="predict the value (level), its change (delta), the change from "
                            "one season ago (seasonal) or from an ETS forecast (ets); auto "
                            "tries them and ships a network only where it clearly wins")
    model.add_argument("--input-mode", default="auto", choices=("auto", *spec.INPUT_MODES),
                       help="feed the values (level) or their changes (delta: for trends and "
                            "prices that leave the training range); auto tries both")
    data.add_argument("--season", type=int, default=None, metavar="N",
                      help="season length in steps, for the seasonal naive baseline and the "
                           "window length (default: detected; 0: none)")
    fit = p.add_argument_group("training (left unset, each fits the length of the series)")
    fit.add_argument("--epochs", type=int, help="at most this many")
    fit.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (default: 0.01)")
    fit.add_argument("--bptt", type=int, help="steps per TBPTT window")
    fit.add_argument("--segments", type=int, help="parallel pieces of the series per batch")
    fit.add_argument("--patience", type=int,
                     help="stop after this many epochs without improvement")
    fit.add_argument("--seed", type=int, default=0, help="same seed, same weights (default: 0)")
    fit.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    fit.add_argument("--threads", type=int, default=1,
                     help="CPU threads for torch; small models are fastest on 1 (default: 1)")
    fit.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    out = p.add_argument_group("output")
    out.add_argument("--out", default="runs/train", metavar="DIR",
                     help="output folder (default: runs/train)")
    out.add_argument("--name", default="model.pt", help="checkpoint file name (default: model.pt)")


def run(args: argparse.Namespace) -> int:
    require_train_extra("train")
    from rnnstream.train import ForecasterConfig, TrainConfig, TrainError

    try:
        series = load_series(args.data, _columns(args.features), _columns(args.targets))
        model_config = ForecasterConfig(cell=args.cell, hidden=args.hidden, layers=args.layers,
                                        dropout=args.dropout)
        train_config = TrainConfig(
            epochs=args.epochs, lr=args.lr, bptt=args.bptt, segments=args.segments,
            patience=args.patience, seed=args.seed, device=args.device,
            val_fraction=args.val_fraction, target_mode=args.target_mode,
            input_mode=args.input_mode, season=args.season,
            horizon=args.horizon, threads=args.threads, progress=not args.no_progress,
        )
        train_to_dir(series, model_config, train_config, args.out, name=args.name)
    except (TrainError, ValueError, OSError) as exc:
        return fail(str(exc))
    return 0


def load_series(data: str, features: list[str] | None = None,
                targets: list[str] | None = None) -> Series:
    """'sine' -> the demo series, anything else -> a CSV path."""
    from rnnstream.train import DataError, load_csv, sine_series

    if data == "sine":
        if features or targets:
            raise DataError("--features/--targets apply to CSV files; the sine demo has one "
                            "column 'sin'")
        return sine_series()
    return load_csv(data, features, targets)


def train_to_dir(
    series: Series,
    model_config: ForecasterConfig,
    train_config: TrainConfig,
    out_dir: str | Path,
    *,
    name: str = "model.pt",
    stream: TextIO | None = None,
    quiet: bool = False,
) -> TrainOutput:
    """Train, write ``out_dir/name`` and ``out_dir/training.png``, print metrics to ``stream``.

    ``stream`` defaults to the current ``sys.stdout``; ``quiet=True`` prints nothing.
    """
    from rnnstream.train import plot_training, save_checkpoint, train

    result = train(series, model_config, train_config)
    out_dir = Path(out_dir)
    checkpoint = save_checkpoint(out_dir / name, result)
    plot = plot_training(result, out_dir / "training.png")
    if not quiet:
        stream = stream or sys.stdout
        print(format_metrics(result.metrics), file=stream)
        print(f"checkpoint: {checkpoint}\nplot:       {plot}", file=stream)
    return TrainOutput(result, checkpoint, plot)


def format_metrics(metrics: dict) -> str:
    """The validation report: one row per target (each in its own units) against persistence
    and seasonal naive, a unit-free summary, the modes chosen and why, and the multi-step
    errors when the model can forecast by feeding its predictions back."""
    m = metrics
    per = m.get("per_target") or {}
    season = m.get("season")
    lines = [f"validation: {m['n_val']} steps after the {m['n_train']} training steps, "
             f"{m['horizon']} step(s) ahead" + (f", season {season}" if season else "")]
    head = f"  {'target':<14} {'MSE':>10} {'MAE':>10} {'persistence':>12} {'model/pers.':>11}"
    if season:
        head += f" {'model/s-naive':>13}"
    lines.append(head)
    for name, t in per.items():
        row = (f"  {name[:14]:<14} {t['mse']:10.4g} {t['mae']:10.4g} {t['persistence_mse']:12.4g}"
               f" {_ratio(t['vs_persistence']):>11}")
        if season:
            v = t.get("vs_seasonal_naive")
            row += f" {_ratio(v) if v is not None else '-':>13}"
        lines.append(row)
    pooled = m["val_mse_norm"] / m["persistence_val_mse_norm"] \
        if m["persistence_val_mse_norm"] > 0 else float("inf")
    verdict = "beats" if m["beats_persistence"] else "does NOT beat"
    lines.append(f"  unit-free (each target / its std): model {m['val_mse_norm']:.4g}, "
                 f"persistence {m['persistence_val_mse_norm']:.4g}: model {verdict} persistence "
                 f"({_ratio(pooled)} its MSE)")
    lines.append(f"modes: inputs {m.get('input_mode', 'level')}, targets {m['target_mode']} "
                 f"({m['target_mode_reason']})")
    lines += _interval_lines(m)
    multi = m.get("multi_step")
    if multi:
        shown = [k for k in multi["steps"] if k in (1, 2, 3, 6, 12, 24, 48) or
                 k == multi["steps"][-1]]
        cols = " ".join(f"{k:>7}" for k in shown)
        title = f"forecast ahead (MSE / variance, {multi['origins']} origins): steps"
        width = len(title) - 2
        lines.append(f"{title} {cols}")
        for label, key in (("model", "model"), ("persistence", "persistence"),
                           ("seasonal naive", "seasonal_naive")):
            if multi.get(key):
                vals = " ".join(f"{multi[key][k - 1]:7.3g}" for k in shown)
                lines.append(f"  {label:<{width}} {vals}")
    d = m.get("defaults") or {}
    lines.append(f"best epoch {m['best_epoch']} of {m['epochs_run']}, {m['train_seconds']:.1f} s "
                 f"on {m['device']}" + (f" (bptt {d.get('bptt')}, segments {d.get('segments')}, "
                                         f"max epochs {d.get('epochs')})" if d else ""))
    return "\n".join(lines)


def _interval_lines(m: dict) -> list[str]:
    """The coverage the runtime's intervals reached on the validation range, per target."""
    v = (m.get("calibration") or {}).get("validation")
    if not v:
        return []
    levels = v["levels"]
    band = levels.index(0.9) if 0.9 in levels else len(levels) - 1
    per = m.get("per_target") or {}
    cols = " ".join(f"{c:>7.0%}" for c in levels)
    lines = ["prediction intervals on validation (the runtime's online intervals, started from "
             "the training residuals): realised coverage",
             f"  {'target':<14} {cols}  mean width at {levels[band]:.0%}"]
    for name, shares in v["realised"].items():
        row = " ".join(f"{s:>7.1%}" if s is not None else f"{'-':>7}" for s in shares)
        width = v["mean_width"][name][band]
        mse = (per.get(name) or {}).get("mse")
        text = "-" if width is None else f"{width:.4g}"
        if width is not None and mse:
            text += f" ({width / mse ** 0.5:.2f}x RMSE)"
        lines.append(f"  {name[:14]:<14} {row}  {text}")
    return lines


def _ratio(value: float) -> str:
    return f"{value:.3f}x" if 0.01 <= value < 10 else f"{value:.3g}x"


def _columns(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [c.strip() for c in text.split(",") if c.strip()]
