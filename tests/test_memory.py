"""keep_freed_memory: glibc keeps freed training buffers (up to 32 MiB) in the process, and main.py
applies it before training."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import main as main_mod
from core_code.util import memory

ROOT = Path(__file__).resolve().parents[1]

glibc = pytest.mark.skipif(not memory.is_glibc(), reason="needs glibc (Linux)")

# A 20 MiB block, malloc'ed, touched and freed in a fresh process: where it came from
# (heap or its own mapping: mallinfo2's hblkhd) and whether the heap kept it (arena).
PROBE = r"""
import ctypes, ctypes.util, json, sys
sys.path.insert(0, {root!r})
from core_code.util.memory import keep_freed_memory
applied = keep_freed_memory() if {apply} else False

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
if not hasattr(libc, "mallinfo2"):
    print(json.dumps(None)); sys.exit()
libc.mallinfo2.restype = Info
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 20 << 20
before = libc.mallinfo2()
p = libc.malloc(size)
ctypes.memset(p, 1, size)
held = libc.mallinfo2()
libc.free(p)
after = libc.mallinfo2()
print(json.dumps({{"applied": applied, "mapped": held.hblkhd - before.hblkhd,
                  "kept": after.arena - before.arena}}))
"""


def _probe(apply: bool, env=None) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE.format(root=str(ROOT), apply=apply)], check=True,
                         capture_output=True, text=True, env={**os.environ, **(env or {})})
    res = json.loads(out.stdout.strip().splitlines()[-1])
    if res is None:
        pytest.skip("this glibc has no mallinfo2 (glibc < 2.33)")
    return res


@glibc
def test_a_freed_block_of_20_mib_stays_in_the_heap():
    plain = _probe(False)
    # glibc's default: a block this size gets its own fresh mapping, handed back at free
    assert plain["mapped"] >= 20 << 20 and plain["kept"] < 20 << 20
    kept = _probe(True)
    assert kept["applied"] is True
    assert kept["mapped"] == 0  # from the heap ...
    assert kept["kept"] >= 20 << 20  # ... which keeps it after free (the next step reuses its pages)


@glibc
def test_the_users_own_malloc_settings_win(monkeypatch):
    res = _probe(True, env={"MALLOC_TRIM_THRESHOLD_": "131072"})
    assert res["applied"] is False
    monkeypatch.setattr(memory, "_applied", None)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert memory.keep_freed_memory() is False


def test_main_applies_it_before_training_and_not_for_listing(tmp_path, monkeypatch):
    from experiments.util import BasicManager

    calls = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: calls.append("keep") or True)
    monkeypatch.setattr(BasicManager, "run", lambda self, tag, indices=None, extend=False, vectorize=False:
                        calls.append("run") or {})
    args = ["--experiment", "tinyTest", "--runs_dir", str(tmp_path / "runs"), "--wandb", "disabled"]
    assert main_mod.main([*args, "--list"]) == 0
    assert calls == []
    assert main_mod.main(args) == 0
    assert calls == ["keep", "run"]
