"""docs/DEPLOY.md's shell blocks, read as a user runs them from a checkout: every
repository file they install exists, and jouled is installed from the checkout (it is not
on PyPI: `pip install jouled` would fetch nothing, or someone else's package)."""

from __future__ import annotations

import re

from tests.deploy.tools import DEPLOY, REPO

PAGE = REPO / "docs" / "DEPLOY.md"


def shell_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", PAGE.read_text(), flags=re.S)


def test_every_repository_file_the_commands_install_exists() -> None:
    named = {p for block in shell_blocks() for p in re.findall(r"\b(deploy/[\w./-]+)", block)}
    assert "deploy/systemd/jouled.service" in named
    assert sorted(p for p in named if not (REPO / p).exists()) == []


def test_jouled_is_installed_from_the_checkout_not_by_name() -> None:
    texts = [PAGE.read_text(), (DEPLOY / "kubernetes" / "daemonset.yaml").read_text()]
    assert [t for t in texts if re.search(r"pip install jouled\b(?!\[)", t)] == []
    assert "/opt/jouled/bin/pip install ." in "".join(shell_blocks())
