"""`dimr info` and config resolution: typed overrides, errors that list the valid choices, --json output."""

import argparse
import json

import pytest

from dimr.errors import ConfigError
from dimr.models import PRESETS, build_model, resolve_model_config
from dimr.models import info as info_cmd
from dimr.models.counting import count_params

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(argv, capsys):
    parser = argparse.ArgumentParser()
    info_cmd.add_arguments(parser)
    rc = info_cmd.run(parser.parse_args(argv))
    return rc, capsys.readouterr().out


def test_info_json_has_params_and_gmacs(capsys):
    argv = ["tiny-dimr", "--json", "--set", "depths=[3,2,2]", "--set", "model.cascade_merge=concat"]
    rc, out = _run(argv, capsys)
    assert rc == 0
    data = json.loads(out)  # exactly one JSON object
    assert isinstance(data["params"], int) and isinstance(data["gmacs"], float)
    cfg = resolve_model_config("tiny-dimr", {"depths": [3, 2, 2], "cascade_merge": "concat"})
    assert data["params"] == count_params(build_model(cfg)) == sum(data["breakdown"].values())
    assert data["config"]["depths"] == [3, 2, 2] and data["preset"] == "tiny-dimr"
    assert 0 < data["gmacs"] < 1


def test_info_table_is_readable(capsys):
    rc, out = _run(["dimr-xl-2r"], capsys)
    assert rc == 0
    assert "505.05M" in out and "160.2" in out
    for part in ("branch1", "branch2", "cascade", "heads", "embeddings", "conditioning"):
        assert part in out


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["dimr-xxl"], "dimr-xl-2r.*tiny-dimr"),  # unknown preset: lists presets
        (["tiny-dimr", "--set", "depth=3"], "valid keys: .*depths"),  # unknown key: lists keys
        (["tiny-dimr", "--set", "depths=[3,two,2]"], r"depths\[1\] must be int"),  # ill-typed item
        (["tiny-dimr", "--set", "class_token=maybe"], "class_token must be bool"),
        (["tiny-dimr", "--set", "mlp=swiglu"], "glu, gelu"),  # bad value: lists choices
        (["tiny-dimr", "--set", "depths"], "KEY=VALUE"),
        (["tiny-dimr", "--set", "depths=3,2,2"], "depths must be a list of int"),  # lists are YAML lists
    ],
)
def test_info_errors_name_the_valid_choices(argv, expected, capsys):
    with pytest.raises(ConfigError, match=expected):
        _run(argv, capsys)


def test_set_parses_each_field_type(capsys):
    overrides = info_cmd.parse_overrides(
        "tiny-dimr",
        [
            "widths=[48, 24, 12]",
            "long_skips=false",
            "dropout=0.1",
            "mlp_ratio=null",
            "block_types=[convnext, convnext, convnext]",
        ],
    )
    assert overrides == {
        "widths": [48, 24, 12],
        "long_skips": False,
        "dropout": 0.1,
        "mlp_ratio": None,
        "block_types": ["convnext"] * 3,
    }
    cfg = resolve_model_config("tiny-dimr", overrides)
    assert cfg["mlp_ratio"] == 2.0  # None resolves to the GLU default
    assert resolve_model_config("tiny-dimr", {"mlp": "gelu"})["mlp_ratio"] == 4.0


def test_resolve_rejects_wrong_types_and_inconsistent_values():
    with pytest.raises(ConfigError, match="depths must be a list of int"):
        resolve_model_config("tiny-dimr", {"depths": 3})
    with pytest.raises(ConfigError, match="resolution must be int"):
        resolve_model_config("tiny-dimr", {"resolution": "32"})
    with pytest.raises(ConfigError, match="long_skips must be bool"):
        resolve_model_config("tiny-dimr", {"long_skips": 1})
    with pytest.raises(ConfigError, match="3 entries but widths has 2"):
        resolve_model_config("tiny-dimr", {"widths": [32, 16]})
    with pytest.raises(ConfigError, match="heads must divide"):
        resolve_model_config("tiny-uvit", {"heads": 5})
    with pytest.raises(ConfigError, match=r"model: unknown key\(s\)"):
        build_model({**resolve_model_config("tiny-dit"), "depths": [1]})
    with pytest.raises(ConfigError, match="'mrn' model"):
        resolve_model_config("tiny-dimr", {"type": "transformer"})


def test_every_preset_resolves_to_a_full_config():
    for name, preset in PRESETS.items():
        cfg = resolve_model_config(name)
        assert cfg["type"] == preset["type"] and set(cfg) == set(preset)
        assert isinstance(cfg["mlp_ratio"], float)
        assert json.loads(json.dumps(cfg)) == cfg  # JSON-serialisable for config.json
