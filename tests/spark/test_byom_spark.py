"""predict_stream on users' own modules (export_module): the lesson's RNN (its feature named
"value" by the user) and a traced custom model (its one state named h, a column of Spark's
state schema). Per key, Predictor(coverage=...) fed each micro-batch's rows with prime:
predictions on every row and the live columns after each micro-batch, bit-equal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lesson_models import byom_model, sine

from ._support import KEY, ORDER, read_sink, require_toolchain, run_query, write_files

require_toolchain()

from rnnstream.runtime import Predictor  # noqa: E402
from rnnstream.spark import live_columns  # noqa: E402

pytestmark = pytest.mark.spark

COVERAGE = 0.9
KEYS, PER_KEY, FILES = 2, 16, 2


def keyed_sine(feature: str) -> list[pd.DataFrame]:
    """FILES parts of KEYS series of the training sine (held out, shifted per key), a key's
    later rows in later parts, each part shuffled."""
    frames = []
    for k in range(KEYS):
        x = sine(400 + PER_KEY)[400:, 0] + 0.1 * k
        frames.append(pd.DataFrame({KEY: f"k{k}", ORDER: np.arange(PER_KEY) * 10 + k,
                                    feature: x.astype(np.float64)}))
    rows = pd.concat(frames, ignore_index=True)
    part = rows.groupby(KEY).cumcount().to_numpy() * FILES // PER_KEY
    return [rows[part == i].sample(frac=1.0, random_state=i) for i in range(FILES)]


def reference(model, parts: list[pd.DataFrame], feature: str) -> pd.DataFrame:
    """Every row's predictions and, on each part's last row of a key (``_end``), the live
    columns: one Predictor(coverage=...) per key, primed with the key's rows of each part."""
    predictors: dict[str, Predictor] = {}
    frames = []
    for part in parts:
        for key, rows in part.sort_values(ORDER).groupby(KEY, sort=True):
            p = predictors.setdefault(key, Predictor(model, coverage=COVERAGE))
            y = p.prime(rows[[feature]].to_numpy(np.float32)).reshape(len(rows), -1)
            frame = rows[[KEY, ORDER]].reset_index(drop=True)
            frame[f"pred_{feature}"] = y[:, 0]
            names = live_columns(p.targets, p.live.season)
            lower, upper = p.interval()
            acc = p.accuracy()
            share, _ = p.realised_coverage()
            frame[names] = np.nan
            frame.loc[len(frame) - 1, names] = np.concatenate(
                [lower, upper, acc["model"]["mae"], acc["model"]["recent_mae"],
                 acc["persistence"]["mae"], share], axis=None)
            frame["_end"] = np.arange(len(frame)) == len(frame) - 1
            frames.append(frame)
    return pd.concat(frames).sort_values([KEY, ORDER], ignore_index=True)


@pytest.mark.parametrize("name", ["lesson_rnn", "traced_skip"])
def test_predictions_and_live_columns_equal_predictor(spark, name, tmp_path, tmp_path_factory):
    model = byom_model(name, tmp_path_factory)
    feature = Predictor(model).contract.features[0]
    assert feature == ("value" if name == "lesson_rnn" else "f0")
    parts = keyed_sine(feature)
    write_files(tmp_path / "in", parts)
    batches = run_query(spark, model, tmp_path / "in", tmp_path / "ck", tmp_path / "out",
                        schema=f"{KEY} string, {ORDER} bigint, {feature} double",
                        coverage=COVERAGE)
    assert batches == list(range(FILES))
    got = read_sink(spark, tmp_path / "out")
    assert got["error"].isna().all()
    want = reference(model, parts, feature)
    assert got[[KEY, ORDER]].equals(want[[KEY, ORDER]])
    end = want["_end"].to_numpy()
    for col in [c for c in want.columns if c not in (KEY, ORDER, "_end")]:
        rows = slice(None) if col.startswith("pred_") else end
        np.testing.assert_array_equal(got[col].to_numpy(float)[rows],
                                      want[col].to_numpy(float)[rows], err_msg=col)
    # the sample's calibration: a finite interval after the first micro-batch already
    first = want[end].groupby(KEY).head(1).index
    assert np.isfinite(got.loc[first, [f"lower_{feature}", f"upper_{feature}"]]).all().all()
