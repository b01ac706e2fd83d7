"""Every cookbook recipe runs, as a user would run it, and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

COOKBOOK = Path(__file__).resolve().parent.parent / "cookbook"
RECIPES = sorted(p for p in COOKBOOK.glob("*.py") if not p.name.startswith("_"))


def test_the_cookbook_has_recipes() -> None:
    """The harness is not vacuous."""
    assert RECIPES


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_runs(recipe: Path, pg_dsn: str, redis_url: str) -> None:
    """`python cookbook/<recipe>.py` exits 0 within a minute, against real servers."""
    env = {
        **os.environ,
        "RESILIENCE_PG_DSN": pg_dsn,
        "RESILIENCE_REDIS_URL": redis_url,
        "PYTHONWARNINGS": "error",
    }
    done = subprocess.run(
        [sys.executable, str(recipe)],
        cwd=COOKBOOK.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{recipe.name} failed:\n{done.stdout}\n{done.stderr}"
