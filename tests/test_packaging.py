"""The three product packages are ours alone, and the docs stay true."""

from __future__ import annotations

import importlib.metadata
import re

import pytest

from tests.helpers import ROOT

PACKAGES = ("registry", "resolver", "agents", "globaldns")


@pytest.mark.parametrize("package", PACKAGES)
def test_no_other_distribution_claims_our_import_names(package: str) -> None:
    # `agents` in particular is also a popular unrelated PyPI package: if one were
    # installed beside us, imports would silently mix the two.
    owners = set(importlib.metadata.packages_distributions().get(package, []))
    assert owners == {"globaldns"}, f"{package} is provided by {owners}"


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_come_from_this_checkout(package: str) -> None:
    module = __import__(package)
    assert module.__file__ is not None
    assert module.__file__.startswith(str(ROOT)), module.__file__


def test_readme_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:sh|bash|console)?\n(.*?)```", readme, re.S)
    assert blocks and blocks[0].split() == ["make", "dev"]
    assert blocks[1].split() == ["make", "test"]


def test_readme_commands_exist() -> None:
    """Every `globaldns <subcommand>` the README shows is a real subcommand."""
    from globaldns.cli import parser

    readme = (ROOT / "README.md").read_text()
    code = "\n".join(re.findall(r"```(?:sh|bash|console)?\n(.*?)```", readme, re.S))
    choices = parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for sub in re.findall(r"(?:^|[\s/])globaldns (\w[\w-]*)", code):
        assert sub in choices, f"README mentions 'globaldns {sub}', which does not exist"
