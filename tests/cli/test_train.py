"""`rnnstream train` end to end through the CLI entry point."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import pytest

from rnnstream.cli.main import main
from rnnstream.train import load_checkpoint


def test_train_sine_writes_checkpoint_and_plot(tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    code = main(["train", "--data", "sine", "--epochs", "2", "--hidden", "8", "--out",
                 str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "persistence" in printed
    assert "realised coverage" in printed
    assert str(out / "model.pt") in printed
    model, info = load_checkpoint(out / "model.pt")
    assert info["metrics"]["epochs_run"] <= 2
    assert model.config.hidden == 8
    image = matplotlib.image.imread(out / "training.png")
    assert image.shape[0] > 300
    assert image.shape[1] > 300


def test_train_csv_with_columns_and_horizon(tmp_path: Path) -> None:
    rows = "\n".join(f"{i},{i % 7},{(i * 3) % 11}" for i in range(120))
    (tmp_path / "d.csv").write_text("t,a,b\n" + rows + "\n")
    code = main(["train", "--data", str(tmp_path / "d.csv"), "--features", "a, b",
                 "--targets", "b", "--horizon", "2", "--epochs", "1", "--bptt", "10",
                 "--target-mode", "level", "--out", str(tmp_path / "o"), "--name", "x.pt",
                 "--no-progress"])
    assert code == 0
    model, info = load_checkpoint(tmp_path / "o" / "x.pt")
    assert model.config.feature_names == ["a", "b"]
    assert model.config.target_names == ["b"]
    assert model.config.horizon == info["metrics"]["horizon"] == 2


def test_bad_csv_exits_1_with_one_line_message(tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "bad.csv").write_text("a\n1\n2\nxyz\n")
    code = main(["train", "--data", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "o"),
                 "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "bad.csv: column 'a', data row 3 (line 4): 'xyz' is not a number" in err
    assert not (tmp_path / "o").exists()


def test_bad_model_option_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--layers", "9", "--out", str(tmp_path), "--no-progress"]) == 1
    assert "layers=9" in capsys.readouterr().err


def test_help_teaches(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text
    assert "--target-mode" in text
    assert "persistence" in text
