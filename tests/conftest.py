"""Pytest fixtures shared by the test files (helper classes and functions: tests/helpers.py)."""

import os

import pytest

# Set by pytorch_lightning.seed_everything and read back by it when called with seed=None,
# also in every subprocess a test starts (main.py, the DDP script, ...).
_SEED_ENV = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")


@pytest.fixture(autouse=True)
def _restore_seed_env():
    """Undo the environment variables a test's ``seed_everything`` leaves behind.

    Without this, the first test that seeds makes every later test (and every process it
    starts) see its seed, so results would depend on which tests ran before.
    """
    saved = {k: os.environ.get(k) for k in _SEED_ENV}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """No login, every W&B path under tmp_path, and no reachable server."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for key in ("WANDB_API_KEY", "WANDB_MODE", "NETRC", "WANDB_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    for key, sub in (("WANDB_DIR", "wandb_dir"), ("WANDB_CONFIG_DIR", "config"),
                     ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(key, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_SILENT", "true")
    return home
