"""Path keys: ~ and environment variables expanded; the ledger's default follows the user."""

from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from jouled import config
from jouled.config import Config, ConfigError, default_ledger_path, load, validate


def _path_keys(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any]]:
    """Every field of the config tree whose type involves Path, with its annotation."""
    found = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        members = [ann, *get_args(ann)]
        sub = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        if sub:
            found += _path_keys(sub[0], f"{prefix}{name}.")
        elif any(m is Path for m in members) or "Path" in str(ann):
            found.append((prefix + name, field))
    return found


def test_every_path_key_expands_home_and_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("JOULED_TEST_DIR", "/srv/jouled")
    keys = _path_keys(Config)
    # Guards the list: a new path key must use config.UserPath to be expanded.
    for name, field in keys:
        where = repr(field.metadata) + repr(field.annotation)
        assert "expand_path" in where, f"{name} is a path key without config.UserPath"
    assert {"ledger.path", "collectors.rapl.path", "attribution.proc_path", "spans.fit_file",
            "ingest.token_file"} <= {k for k, _ in keys}  # fmt: skip
    cfg = validate(
        {
            "ledger": {"path": "~/.local/state/jouled/ledger.db"},
            "collectors": {"rapl": {"path": "$JOULED_TEST_DIR/powercap"}},
            "attribution": {"proc_path": "${JOULED_TEST_DIR}/proc"},
            "ingest": {"token_file": "~/token"},
            "spans": {"fit_file": "~/fit.json"},
            "workloads": [{"name": "w", "match": {"pidfile": "$HOME/w.pid"}}],
            "cost": {"grid_intensity": {"provider": "electricitymaps", "zone": "DE",
                                        "token_file": "~/em.token"}},
        },
        "t.yaml",
    )  # fmt: skip
    assert cfg.ledger.path == tmp_path / ".local/state/jouled/ledger.db"
    assert cfg.collectors.rapl.path == Path("/srv/jouled/powercap")
    assert cfg.attribution.proc_path == Path("/srv/jouled/proc")
    assert cfg.ingest.token_file == tmp_path / "token"
    assert cfg.spans.fit_file == tmp_path / "fit.json"
    assert cfg.workloads[0].match.pidfile == tmp_path / "w.pid"
    grid = cfg.cost.grid_intensity
    assert isinstance(grid, config.GridProviderConfig)
    assert grid.token_file == tmp_path / "em.token"


def test_an_unset_variable_is_an_error_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOULED_NOT_SET", raising=False)
    path = tmp_path / "c.yaml"
    path.write_text("ledger:\n  path: $JOULED_NOT_SET/ledger.db\n")
    with pytest.raises(ConfigError) as exc:
        load(path)
    assert str(exc.value) == (
        f"{path}:2: key 'ledger.path': environment variable $JOULED_NOT_SET is not set "
        "(in '$JOULED_NOT_SET/ledger.db')"
    )


def test_ledger_default_for_a_non_root_user_is_the_xdg_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config.os, "geteuid", lambda: 1000)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    assert default_ledger_path() == tmp_path / ".local/state/jouled/ledger.db"
    assert load(None).ledger.path == tmp_path / ".local/state/jouled/ledger.db"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert load(None).ledger.path == tmp_path / "state/jouled/ledger.db"
    # A flag override keeps the environment's default (the ledger is not a flag).
    assert load(None).with_overrides(listen="127.0.0.1:1").ledger.path == (
        tmp_path / "state/jouled/ledger.db"
    )
    monkeypatch.setenv("XDG_STATE_HOME", "relative/state")  # ignored, as the spec says
    assert default_ledger_path() == tmp_path / ".local/state/jouled/ledger.db"
    # systemd's StateDirectory=jouled (the unit's User=jouled drop-in) wins.
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/jouled")
    assert default_ledger_path() == Path("/var/lib/jouled/ledger.db")


def test_ledger_default_for_root_is_var_lib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config.os, "geteuid", lambda: 0)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    assert default_ledger_path() == Path("/var/lib/jouled/ledger.db")
    # Configured explicitly: used as given, whoever runs it.
    assert validate({"ledger": {"path": "/tmp/x.db"}}, "t").ledger.path == Path("/tmp/x.db")
