"""params.yaml is read once into typed models; bad keys and values fail naming the key."""

from __future__ import annotations

import pytest
import yaml

from histoflow.config import ConfigError, load_params, parse_params


def test_repository_params_load(repo):
    params = load_params(repo / "params.yaml")
    assert params.train_fusion.width % params.train_fusion.heads == 0
    assert params.validate.min_per_class >= 1


def test_unknown_key_names_the_key_and_allowed_keys(tiny_params_dict):
    raw = tiny_params_dict(train_fusion={"widht": 64})
    with pytest.raises(ConfigError) as err:
        parse_params(raw)
    message = str(err.value)
    assert "train_fusion.widht: unknown key" in message
    assert "width" in message and "layers" in message


def test_unknown_section_is_rejected(tiny_params_dict):
    raw = tiny_params_dict()
    raw["trian_fusion"] = {}
    with pytest.raises(ConfigError, match="trian_fusion: unknown key"):
        parse_params(raw)


@pytest.mark.parametrize(
    ("section", "values", "needle"),
    [
        ("train_encoder", {"epochs": 0}, "train_encoder.epochs = 0"),
        ("train_encoder", {"precision": "fp8"}, "train_encoder.precision = 'fp8'"),
        ("data", {"test_fraction": 1.5}, "data.test_fraction = 1.5"),
        ("train_fusion", {"width": 30, "heads": 4}, "divisible by heads"),
        ("registry", {"metric": "loss"}, "registry.metric = 'loss'"),
        # Accepted before: an infinite rate, a boolean epoch count (True == 1), a schedule or
        # time zone that only failed when the deployments were served.
        (
            "train_encoder",
            {"lr": float("inf")},
            "train_encoder.lr = inf: Input should be a finite number",
        ),
        ("train_fusion", {"lr": float("nan")}, "train_fusion.lr = nan"),
        ("train_encoder", {"epochs": True}, "train_encoder.epochs = True: Value error, expected a"),
        ("train_encoder", {"devices": True}, "train_encoder.devices = True"),
        ("deploy", {"training_cron": "0 25 * * *"}, "deploy.training_cron = '0 25 * * *'"),
        ("deploy", {"timezone": "Europe/Atlantis"}, "deploy.timezone = 'Europe/Atlantis'"),
    ],
)
def test_bad_values_name_key_and_value(section, values, needle, tiny_params_dict):
    with pytest.raises(ConfigError) as err:
        parse_params(tiny_params_dict(**{section: values}))
    assert needle in str(err.value)


def test_missing_section_and_missing_file(tiny_params_dict, tmp_path):
    raw = tiny_params_dict()
    del raw["monitor"]
    with pytest.raises(ConfigError, match="monitor: required"):
        parse_params(raw)
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")


def test_params_are_frozen(tiny_params):
    with pytest.raises(Exception, match="frozen"):
        tiny_params.train_fusion.width = 4  # type: ignore[misc]


def test_params_round_trip_through_yaml(tmp_path, tiny_params_dict):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_params_dict()))
    assert load_params(path).train_encoder.backbone == "test_resnet"


def test_booleans_stay_valid_where_they_mean_something(tiny_params_dict):
    params = parse_params(
        tiny_params_dict(
            train_encoder={"pretrained": False, "devices": "auto", "grad_clip": None},
            validate={"checks": {"blurred": False}},  # YAML's bare `off`
        )
    )
    assert params.validate.checks.blurred == "off" and params.train_encoder.devices == "auto"
