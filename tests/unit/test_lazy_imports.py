"""A projection builder process (`python -m projections.rebuild NAME`) needs the events and the
codec, not the application: `ledger_core` loads `Ledger` (and with it the settings, the writer and
pydantic) only when it is asked for, which halves the builder's start-up."""

from __future__ import annotations

import subprocess
import sys

import pytest

import ledger_core


def _modules_after(statement: str) -> set[str]:
    completed = subprocess.run(
        [sys.executable, "-c", f"{statement}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(completed.stdout.split())


def test_the_rebuild_module_does_not_load_the_application() -> None:
    loaded = _modules_after("import projections.rebuild")
    assert "ledger_core.events" in loaded  # what it does need
    assert not {"ledger_core.ledger", "ledger_core.writer", "ledger_core.settings"} & loaded
    assert "pydantic_settings" not in loaded


def test_ledger_is_loaded_on_first_use() -> None:
    loaded = _modules_after("from ledger_core import Ledger\nassert Ledger.__name__ == 'Ledger'")
    assert "ledger_core.ledger" in loaded
    from ledger_core.ledger import Ledger

    assert ledger_core.Ledger is Ledger


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Ledgr'"):
        ledger_core.Ledgr  # noqa: B018
