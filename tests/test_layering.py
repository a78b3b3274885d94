"""The layering rules of the README, as tests.

- the model and data library (``core_code.create_model``, ``core_code.create_data``, the
  function library) loads no Lightning, W&B, matplotlib or ``experiments``;
- the Lightning layer loads no W&B, matplotlib or ``experiments``;
- no module under ``core_code/`` imports ``experiments``;
- ``wandb`` is imported only in the logging layer, matplotlib only in the logging and
  analysis layers.

Import checks run in a fresh interpreter (what a module pulls in is only visible there);
the source checks read every import statement, including imports inside functions.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("pytorch_lightning", "lightning", "wandb", "matplotlib", "experiments")


def loaded_after_import(*modules: str) -> set[str]:
    """Top-level package names in sys.modules after importing ``modules`` in a fresh python.

    Importing several at once checks each: what one of them loads is in the union.
    """
    code = (f"import sys, json, importlib; [importlib.import_module(m) for m in {list(modules)!r}]; "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


LIBRARY = ["core_code.create_model", "core_code.create_data", "core_code.util.function_lib",
           "core_code.model_lib.abcMLP", "core_code.util.memory"]
LIGHTNING_LAYER = ["core_code.lightning_multitask", "core_code.util.lightning", "core_code.vectorized",
                   "core_code.util.trainer_config"]


def test_model_and_data_library_load_no_framework():
    loaded = loaded_after_import(*LIBRARY)
    assert not loaded & set(HEAVY), f"{LIBRARY} load {sorted(loaded & set(HEAVY))}"


def test_lightning_layer_loads_no_wandb_matplotlib_or_experiments(lightning_itself):
    loaded = loaded_after_import(*LIGHTNING_LAYER)
    assert "pytorch_lightning" in loaded  # the check would be void otherwise
    # torchmetrics (a Lightning dependency) imports matplotlib when it is installed: what
    # Lightning loads by itself is not ours to avoid; everything beyond it is checked.
    bad = (loaded - lightning_itself) & {"wandb", "matplotlib", "experiments"}
    assert not bad, f"{LIGHTNING_LAYER} load {sorted(bad)}"
    assert "wandb" not in loaded and "experiments" not in loaded


@pytest.fixture(scope="module")
def lightning_itself() -> set[str]:
    return loaded_after_import("pytorch_lightning")


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import statement in a file, nested ones too."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def python_files(*parts: str) -> list[Path]:
    base = ROOT.joinpath(*parts)
    return sorted(p for p in base.rglob("*.py") if ".venv" not in p.parts)


def offenders(package: str, allowed: tuple[str, ...]) -> list[str]:
    """Files outside ``allowed`` (paths relative to the repo) that import ``package``."""
    found = []
    for path in python_files("core_code") + python_files("experiments") + [ROOT / "main.py", ROOT / "pre_main.py"]:
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(allowed):
            continue
        found += [f"{rel}:{line}" for line, name in imports_of(path) if name == package]
    return found


def test_core_code_never_imports_experiments():
    bad = [f"{p.relative_to(ROOT)}:{line}" for p in python_files("core_code")
           for line, name in imports_of(p) if name == "experiments"]
    assert not bad, bad


def test_wandb_only_in_the_logging_layer():
    assert not offenders("wandb", ("experiments/logging/",))


def test_matplotlib_only_in_logging_and_analysis():
    assert not offenders("matplotlib", ("experiments/logging/", "experiments/analysis/"))


def test_the_source_check_sees_nested_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    import wandb\n    from matplotlib import pyplot\n")
    assert imports_of(f) == [(2, "wandb"), (3, "matplotlib")]
