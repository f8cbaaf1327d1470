"""LiveConfig (one live configuration, checked once) and the contract's typed live facts
(``trained_season``, ``calibration``; read from ``metrics`` for models exported before them)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from rnnstream.runtime import ContractError, InputError, ModelContract, Predictor, StreamPool
from rnnstream.runtime.live import (
    Calibration,
    LiveConfig,
    LiveScores,
    LiveStream,
    open_live,
)

CAL = {"levels": [0.8, 0.9, 0.95],
       "half_widths": {"a": [[1.0, 2.0, 3.0], [2.0, 4.0, None]], "b": [[1.0, 1.0, 1.0]]},
       "residuals": 40}


def _contract(**extra) -> ModelContract:
    return ModelContract(cell="gru", layers=1, hidden=4, features=["a", "b"],
                         targets=["a", "b"], **extra)


def _reloaded(contract: ModelContract) -> ModelContract:
    return ModelContract.from_json(contract.to_json(), "model.onnx")


# -- LiveConfig --------------------------------------------------------------------------------
@pytest.mark.parametrize(("settings", "named"), [
    ({"season": 24}, "season=24"),
    ({"season": 0, "lr": 0.3}, "season=0 and lr=0.3"),  # 0.3: no default, before or now
    ({"initial_quantiles": [1.0]}, r"initial_quantiles=\[1.0\]"),
])
def test_settings_without_coverage_are_refused_once(settings, named):
    with pytest.raises(InputError, match=rf"{named} set up the live scores, which are off "
                                         r"without coverage; give coverage too"):
        LiveConfig(**settings)


@pytest.mark.parametrize("make", [Predictor, StreamPool], ids=["Predictor", "StreamPool"])
def test_predictor_and_pool_refuse_a_season_without_coverage(lstm, make):
    """They ignored it silently before LiveConfig."""
    with pytest.raises(InputError, match="season=24 set up the live scores"):
        make(lstm[0], season=24)
    with pytest.raises(InputError, match="live_options"):
        make(lstm[0], live_options={"window": 3})
    with pytest.raises(InputError, match="not both"):
        make(lstm[0], coverage=0.9, live=LiveConfig(coverage=0.9))


@pytest.mark.parametrize(("settings", "match"), [
    ({"coverage": 1.0}, "coverage is 1.0; expected a number strictly between 0 and 1"),
    ({"coverage": 0.9, "season": -1}, "season is -1; expected a whole number"),
    ({"coverage": 0.9, "season": True}, "season is True"),
    ({"coverage": 0.9, "lr": 0}, "lr is 0; expected a positive number"),
    ({"coverage": 0.9, "half_life": math.inf}, "half_life is inf"),
    ({"coverage": 0.9, "initial_quantiles": [1.0, -1.0]}, "non-negative half-widths"),
    ({"coverage": 0.9, "initial_quantiles": [[1.0]]}, "non-negative half-widths"),
    ({"coverage": 0.9, "initial_scales": [0.5, math.nan]},
     r"initial_scales is \[0.5, nan\]; expected non-negative scales of the errors"),
    ({"coverage": 0.9, "initial_scales": "0.5"}, "initial_scales is '0.5'"),
    ({"initial_scales": [0.5]}, r"initial_scales=\[0.5\] set up the live scores"),
])
def test_bad_settings_are_refused_where_given(settings, match):
    with pytest.raises(InputError, match=match):
        LiveConfig(**settings)


def test_the_config_is_frozen_and_holds_plain_values():
    config = LiveConfig(coverage=0.9, initial_quantiles=np.array([1.0, 2.0]))
    assert config.initial_quantiles == (1.0, 2.0)
    assert config == LiveConfig.from_options(0.9, None, {"initial_quantiles": [1.0, 2.0]})
    assert LiveConfig().enabled is False
    with pytest.raises(AttributeError):
        config.coverage = 0.5  # type: ignore[misc]


@pytest.mark.parametrize("n", [None, 3])
def test_open_equals_the_older_open_live(n):
    contract = _contract(trained_season=4, calibration=Calibration.from_json(
        CAL, ["a", "b"], "test"))
    for season in (None, 0, 2):
        new = LiveConfig(coverage=0.85, season=season).open(contract, "m", n)
        old = open_live(contract, 0.85, season, {}, "m", n)
        assert type(new) is (LiveStream if n is None else LiveScores)
        assert new.settings() == old.settings()
        assert new.season == (4 if season is None else season or None)
        assert new.initial.tolist() == old.initial.tolist() == pytest.approx([1.5, 1.0])


# -- the non-finite policy ------------------------------------------------------------------------
def test_a_non_finite_prediction_starts_one_stream_afresh():
    one = LiveStream(["a"], ["a"], coverage=0.9)
    for v in (1.0, 2.0, 3.0):
        one.observe_one(v, v + 0.5)
    one.observe_one(4.0, math.nan)
    assert one.seen == 0
    many = LiveScores(3, ["a"], ["a"], coverage=0.9)
    x = np.array([[1.0], [2.0], [3.0]])
    many.observe(slice(0, 3), x, x + 0.5)
    many.observe(np.array([0, 2]), x[:2], np.array([[np.inf], [1.0]]))
    assert many.state_arrays()["seen"].tolist() == [0, 1, 2]


# -- typed contract facts -------------------------------------------------------------------------
def test_typed_facts_round_trip_and_are_read_first():
    cal = Calibration.from_json(CAL, ["a", "b"], "test")
    contract = _reloaded(_contract(trained_season=12, calibration=cal,
                                   metrics={"season": 5, "calibration": {"levels": []}}))
    facts = contract.live_facts()
    assert (facts.season, facts.calibration) == (12, cal)
    assert facts.calibration.to_json() == CAL
    assert facts.calibration.half_widths_at(["a", "b"], 0.9) == [2.0, 1.0]
    assert facts.calibration.step_ratio_rows(["a", "b"], 0.9, 3) == [
        [1.0, 1.0], [2.0, math.inf], [math.inf, math.inf]]


def test_models_without_them_keep_their_exact_json():
    plain = _contract(metrics={"val_mae": 0.5})
    text = plain.to_json()
    assert "trained_season" not in text
    assert '"calibration"' not in text
    assert _reloaded(plain).live_facts() == (_reloaded(plain).live_facts())
    assert _reloaded(plain).live_facts().season is None


def test_facts_of_older_exports_are_read_from_metrics():
    old = _reloaded(_contract(metrics={"season": 7, "calibration": CAL}))
    assert (old.trained_season, old.calibration) == (0, None)  # stored where 0.3 put them
    facts = old.live_facts()
    assert facts.season == 7
    assert facts.calibration == Calibration.from_json(CAL, ["a", "b"], "test")
    for odd in (0, -3, True, "7", None):
        assert _reloaded(_contract(metrics={"season": odd})).live_facts().season is None


def test_a_malformed_typed_calibration_is_refused_at_load():
    data = json.loads(_contract(calibration=Calibration.from_json(CAL, ["a", "b"], "t")).to_json())
    data["calibration"]["half_widths"] = {"a": [[1.0, 2.0, 3.0]]}
    with pytest.raises(ContractError, match=r"model.onnx: metadata 'calibration' is malformed: "
                                            r"'half_widths' has targets \['a'\]"):
        ModelContract.from_dict(data, "model.onnx")
    data = json.loads(_contract(trained_season=3).to_json())
    data["trained_season"] = 0
    with pytest.raises(ContractError, match="'trained_season' is 0"):
        ModelContract.from_dict(data, "model.onnx")


def test_a_malformed_metrics_calibration_is_refused_when_read():
    """As before 0.4: the model loads, and only the live scores refuse it."""
    old = _reloaded(_contract(metrics={"calibration": {"levels": [0.9], "half_widths": {}}}))
    with pytest.raises(ContractError, match=r"m: metrics 'calibration' is malformed"):
        old.live_facts("m")
    with pytest.raises(ContractError, match="malformed"):
        LiveConfig(coverage=0.9).open(old, "m")
    assert LiveConfig(coverage=0.9, season=0, initial_quantiles=[1.0, 1.0]).open(old, "m")


def test_an_exporter_moves_the_facts_out_of_metrics():
    contract = _contract(metrics={"season": 24, "calibration": CAL, "val_mae": 1.0})
    contract.adopt_metrics_facts()
    assert contract.metrics == {"val_mae": 1.0}
    assert contract.trained_season == 24
    assert contract.calibration is not None
    assert contract.calibration.to_json() == CAL
    text = json.loads(contract.to_json())
    assert (text["trained_season"], text["calibration"]) == (24, CAL)
    assert list(text)[-2:] == ["trained_season", "calibration"]  # after every older key
    bad = _contract(metrics={"calibration": {"levels": [2.0], "half_widths": {}}})
    with pytest.raises(ContractError, match="'levels' is"):
        bad.adopt_metrics_facts()


def test_the_legacy_fixture_has_no_facts():
    path = Path(__file__).parents[1] / "data" / "legacy_v0_1_0" / "model.onnx"
    p = Predictor(path, live=LiveConfig(coverage=0.9))
    assert p.contract is not None
    assert p.contract.live_facts().season is None
    assert p.live is not None
    assert p.live.season is None
    assert np.isinf(p.live.initial).all()


def test_live_equals_the_older_keywords_bit_for_bit(model_file):
    path = model_file(cell="gru", features=3, targets=2, hidden=8, seed=5)[0]
    xs = np.random.default_rng(4).normal(size=(40, 3)).astype(np.float32)
    config = LiveConfig(coverage=0.8, season=4, half_life=20.0)
    new, old = Predictor(path, live=config), Predictor(path, coverage=0.8, season=4,
                                                       live_options={"half_life": 20.0})
    pools = [StreamPool(path, auto_add=True, live=config),
             StreamPool(path, auto_add=True, coverage=0.8, season=4,
                        live_options={"half_life": 20.0})]
    for x in xs:
        assert np.array_equal(new.step(x), old.step(x))
        for pool in pools:
            pool.step_many(["a", "b"], np.stack([x, -x]))
    assert new.live is not None
    assert old.live is not None
    for name, value in new.live.state_arrays().items():
        np.testing.assert_array_equal(value, old.live.state_arrays()[name], err_msg=name)
    for name, value in pools[0].get_live("b").items():
        np.testing.assert_array_equal(value, pools[1].get_live("b")[name], err_msg=name)


# -- one error, one place for the checks ----------------------------------------------------------
BAD_SETTINGS = [
    ({"coverage": 1.5}, "coverage is 1.5; expected a number strictly between 0 and 1"),
    ({"coverage": np.bool_(True)}, r"coverage is (np\.)?True_?; expected a number strictly"),
    ({"lr": -0.1}, "lr is -0.1; expected a positive number"),
    ({"lr": np.bool_(True)}, r"lr is (np\.)?True_?; expected a positive number"),
    ({"half_life": math.nan}, "half_life is nan; expected a positive number"),
]


@pytest.mark.parametrize(("change", "match"), BAD_SETTINGS)
def test_a_bad_setting_is_one_error_that_is_both_config_and_input(change, match):
    """A ConfigError (the name for a bad setting) that is still an InputError (what it was),
    with the same words from LiveConfig and from the score objects, which call its checks."""
    from rnnstream.runtime import ConfigError
    from rnnstream.runtime.errors import LiveConfigError

    settings = {"coverage": 0.9, **change}
    for make in (lambda: LiveConfig(**settings),
                 lambda: LiveStream(["a"], ["a"], **settings),
                 lambda: LiveScores(2, ["a"], ["a"], **settings)):
        with pytest.raises(LiveConfigError, match=match) as caught:
            make()
        assert isinstance(caught.value, ConfigError)
        assert isinstance(caught.value, InputError)
        assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("season", [-1, 1.5, "24", True, np.bool_(True)])
def test_a_bad_season_is_refused_by_the_one_check(season):
    from rnnstream.runtime.errors import LiveConfigError

    with pytest.raises(LiveConfigError, match=r"season is .*; expected a whole number of points "
                                              r"\(0: none\), or None for the season"):
        LiveConfig(coverage=0.9, season=season)
    with pytest.raises(LiveConfigError, match=r"season is .*; expected an integer >= 1"):
        LiveStream(["a"], ["a"], coverage=0.9, season=season)


def test_a_numpy_integer_season_is_taken_as_an_int():
    config = LiveConfig(coverage=0.9, season=np.int64(24))
    assert config.season == 24
    assert type(config.season) is int
    assert config == LiveConfig(coverage=0.9, season=24)


def test_every_refusal_of_live_config_is_a_live_config_error():
    from rnnstream.runtime.errors import LiveConfigError

    for make in (lambda: LiveConfig(season=24),
                 lambda: LiveConfig.from_options(0.9, None, {"window": 3}),
                 lambda: LiveConfig.resolve("0.9", None, None, None, "test"),  # type: ignore[arg-type]
                 lambda: LiveConfig.resolve(LiveConfig(coverage=0.9), 0.9, None, None, "test"),
                 lambda: LiveConfig(coverage=0.9, initial_quantiles=[-1.0]),
                 lambda: LiveConfig().open(_contract())):
        with pytest.raises(LiveConfigError):
            make()
