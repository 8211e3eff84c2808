import pytest

from torch_consistency.config import Config
from torch_consistency.configs import apply_overrides, bundled_configs, config_path, load_config
from torch_consistency.errors import ConfigError


def test_round_trip_through_a_dict():
    config = load_config(None, ["optim.lr=3e-4", "train.ema_rates=[0.99, 0.999]", 'cd.solver="euler"'])
    assert Config.from_dict(config.to_dict()) == config
    assert config.optim.lr == 3e-4 and config.train.ema_rates == [0.99, 0.999] and config.cd.solver == "euler"


def test_overrides_parse_toml_values_and_bare_strings():
    values = apply_overrides({}, ["cd.solver=euler", "cd.num_points=40", "sampling.clip_denoised=true"])
    assert values == {"cd": {"solver": "euler", "num_points": 40}, "sampling": {"clip_denoised": True}}


def test_integers_are_accepted_for_floats_but_not_the_reverse():
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0
    with pytest.raises(ConfigError, match=r"cd\.num_points must be an integer"):
        load_config(None, ["cd.num_points=2.5"])


def test_toml_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[train]\nmethod = "ct"\ntotal_steps = 12\n[ct]\ns1 = 20\n')
    config = load_config(path)
    assert config.train.method == "ct" and config.train.total_steps == 12 and config.ct.s1 == 20


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["diffusion.sigma_min=100"], "sigma_min < sigma_max"),
        (["cd.num_points=1"], "num_points"),
        (["cd.target_ema=1.0"], "target_ema"),
        (["cd.target_ema=-0.1"], "target_ema"),
        (["cd.solver=rk4"], "cd.solver"),
        (["cd.solver=dpmpp-2m"], "cd.teacher_substeps ≥ 2"),
        (["cd.grow_from=1"], "cd.grow_from"),
        (["cd.num_points=10", "cd.grow_from=11"], "cd.grow_from"),
        (["ct.distance=lpips"], "ct.distance"),
        (["data.name=imagenet"], "data.name"),
        (["train.ema_rates=[1.0]"], "ema_rates"),
        (["train.ema_power=-1"], "train.ema_power"),
        (["optim.nesterov=true"], "unknown config key optim.nesterov"),
        (["model.width=3"], "unknown config key model"),
        (["lr=3"], "section.key=value"),
        (['train.method="cd"'], "cd.teacher"),
    ],
)
def test_bad_values_raise_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(None, overrides)
    assert "\n" not in str(info.value)


def test_malformed_and_missing_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nmethod = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


@pytest.mark.parametrize("name", bundled_configs())
def test_every_bundled_config_passes_validation(name):
    """A bundled file edited into a value the validation refuses (a default w outside the trained range, a
    misspelt key) fails here, not at a user's `cm train`."""
    teachers = ["cd.teacher=runs/teacher", "ect.teacher=runs/teacher", "scm.teacher=runs/teacher"]
    config = load_config(config_path(name), teachers)
    assert config.train.method == name.split("_", 1)[1].removesuffix("_cfg")
