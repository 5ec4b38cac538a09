from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jouled import config
from jouled.config import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "jouled.yaml"
    p.write_text(text)
    return p


def test_defaults_match_the_design() -> None:
    cfg = config.load(None)
    assert cfg.interval == 1.0
    assert cfg.listen == "0.0.0.0:9877"
    assert cfg.ingest.listen == "127.0.0.1:9878"
    assert cfg.collectors.rapl.enabled == "auto"
    assert cfg.collectors.rapl.path == Path("/sys/class/powercap")


def test_file_overrides_defaults_and_flags_override_file(tmp_path: Path) -> None:
    p = write(tmp_path, "interval: 2.5\nlisten: 127.0.0.1:1234\n")
    cfg = config.load(p)
    assert cfg.interval == 2.5
    assert cfg.listen == "127.0.0.1:1234"
    assert cfg.collectors.nvml.enabled == "auto"  # untouched default
    flagged = cfg.with_overrides(listen="127.0.0.1:5555", log_level=None)
    assert flagged.listen == "127.0.0.1:5555"
    assert flagged.interval == 2.5


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    assert config.load(write(tmp_path, "")) == config.DEFAULT_CONFIG


@pytest.mark.parametrize(
    ("text", "key", "line", "hint"),
    [
        ("interval: 0.01\n", "interval", 1, "greater than or equal to 0.1"),
        ("interval: 61\n", "interval", 1, "less than or equal to 60"),
        ("# c\ncollectors:\n  rapl:\n    enabled: maybe\n", "collectors.rapl.enabled", 4, "'auto'"),
        ("collectors:\n  rapl:\n    bogus: 1\n", "collectors.rapl.bogus", 3, "unknown key"),
        ("listen: nope\n", "listen", 1, "HOST:PORT"),
        ("interval: fast\n", "interval", 1, "number"),
    ],
)
def test_bad_values_name_file_key_line_and_what_is_allowed(
    tmp_path: Path, text: str, key: str, line: int, hint: str
) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        config.load(p)
    msg = str(err.value)
    assert msg.startswith(f"{p}:{line}: ")
    assert f"key '{key}'" in msg
    assert hint in msg
    assert "\n" not in msg


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    p = write(tmp_path, "interval: 1\nlisten: [oops\n")
    with pytest.raises(ConfigError, match=rf"^{p}:\d+: invalid YAML"):
        config.load(p)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        config.load(write(tmp_path, "- 1\n- 2\n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        config.load(tmp_path / "absent.yaml")


def test_estimate_coefficients_are_consistent(tmp_path: Path) -> None:
    p = write(tmp_path, "collectors:\n  estimate:\n    cpu_min_watts_per_vcpu: 9\n")
    with pytest.raises(ConfigError, match="must not exceed"):
        config.load(p)


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    p = write(tmp_path, "interval: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        config.load(p)


@settings(max_examples=150, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.floats(allow_nan=True) | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=12), children, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_any_document_either_validates_or_raises_config_error(doc: object) -> None:
    try:
        cfg = config.validate(doc, "fuzz.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml")
    else:
        assert 0.1 <= cfg.interval <= 60


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"attribution": {"idle_power_watts": {"cpu": float("inf")}}}, "idle_power_watts.cpu"),
        ({"collectors": {"rapl": {"max_power_watts": float("inf")}}}, "max_power_watts"),
        ({"collectors": {"estimate": {"memory_watts_per_gb": float("inf")}}}, "memory_watts"),
        ({"spans": {"gflops_per_token": {"m": float("inf")}}}, "gflops_per_token"),
    ],
)
def test_infinite_watts_and_gflops_are_refused(doc: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        config.validate(doc, "test")
