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
import argparse, os, sys
p = argparse.ArgumentParser()
p.add_argument("--experiment", default="compositeSine")
a = p.parse_args()
if a.experiment == "noSuchExperiment":
    print("error: unknown experiment 'noSuchExperiment'; known: tinyTest", file=sys.stderr)
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
        self.log.touch()
        self.stub_log.touch()
        write_exe(self.fake / "ssh", FAKE_SSH)
        write_exe(self.fake / "sbatch", FAKE_SBATCH)
        write_exe(self.fake / "bsub", FAKE_BSUB)
        write_exe(self.fake / "squeue", FAKE_SQUEUE)
        write_exe(self.fake / "bjobs", FAKE_BJOBS)
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

    def env(self, fake_path: bool = True, **extra) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("MTL_", "SLURM_", "LSB_", "STUB_", "SBATCH_"))}
        env.update(HOME=str(self.home), FAKE_LOG=str(self.log), FAKE_DIR=str(self.tmp),
                   STUB_LOG=str(self.stub_log))
        if fake_path:
            env["PATH"] = f"{self.fake}{os.pathsep}{env['PATH']}"
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def run(self, script: str, *args: str, env: dict | None = None, timeout: float = 60):
        return subprocess.run(["bash", str(self.repo / "bash_files" / script), *args],
                              capture_output=True, text=True, env=env or self.env(),
                              cwd=self.tmp, timeout=timeout)

    def remote_run(self, *args: str, **env):
        return self.run("run_remote.sh", *args, "--settings", str(self.settings), env=self.env(**env))

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()

    def submissions(self) -> list[str]:
        return [c for c in self.calls() if c.startswith(("sbatch", "bsub"))]

    def main_calls(self) -> list[dict]:
        return [json.loads(line) for line in self.stub_log.read_text().splitlines()]


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


# ------------------------------------------------------- the job scripts, run locally
def render_job_script(sb: Sandbox, scheduler: str, stub_python: str) -> Path:
    venv = sb.tmp / "venv"
    write_exe(venv / "bin" / "python", stub_python)
    sb.remote.mkdir(exist_ok=True)
    sb.write_settings(SCHEDULER=scheduler, REMOTE_VENV=str(venv), WANDB="disabled")
    r = sb.remote_run("T", "--dry-run")
    assert r.returncode == 0, r.stderr
    job = sb.tmp / f"{scheduler}-job.sh"
    job.write_text(split_dry_run(r.stdout)[1])
    return job


ECHO_PYTHON = """#!/bin/bash
printf '%s\\n' "$PWD" "$*" >"$STUB_ARGS"
"""


@pytest.mark.parametrize("scheduler,index_var", [("slurm", "SLURM_ARRAY_TASK_ID"), ("lsf", "LSB_JOBINDEX")])
def test_job_script_runs_its_array_index(sb, scheduler, index_var):
    job = render_job_script(sb, scheduler, ECHO_PYTHON)
    args_file = sb.tmp / "args.txt"
    r = subprocess.run(["bash", str(job)], capture_output=True, text=True, timeout=30,
                       env=sb.env(**{index_var: "2", "STUB_ARGS": args_file}))
    assert r.returncode == 0, r.stdout + r.stderr
    cwd, args = args_file.read_text().splitlines()
    assert cwd == str(sb.remote)
    assert args == ("main.py --experiment tinyTest --experimentbatch_name T --num_config 2 "
                    "--config_trainer max_epochs:3 accelerator:cpu --wandb disabled")
    assert "main.py exited with status 0" in r.stdout


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


def test_lsf_submission(sb):
    sb.write_settings(SCHEDULER="lsf")
    r = sb.remote_run("T")
    assert r.returncode == 0, r.stderr
    assert sb.submissions() == ["bsub -J T[1-3]%2"]
    assert "job id: 5678" in r.stdout and "bjobs" in r.stdout
    submitted = (sb.tmp / "submitted.sh").read_text()
    assert "#BSUB -o runs/T/cluster/lsf-%J_%I.out" in submitted
    assert "ARRAY_INDEX=${LSB_JOBINDEX:-}" in submitted


def test_missing_resubmits_only_unfinished_points(sb):
    sb.write_settings()
    (sb.remote / "runs" / "T").mkdir(parents=True)
    (sb.remote / "runs" / "T" / "manifest.json").write_text("{}")
    r = sb.remote_run("T", "--missing", STUB_MISSING="2")
    assert r.returncode == 0, r.stderr
    assert len(sb.submissions()) == 1 and sb.submissions()[0].startswith("sbatch --parsable --array=2%2 ")
    assert "1 element(s) (2%2)" in r.stdout


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


@pytest.mark.parametrize("tag", ["my run", "a;b", "x$(touch pwned)", "a/b", "../up", "", ".hidden", "t`id`"])
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


def test_no_tag_and_unknown_option(sb):
    sb.write_settings()
    r = sb.run("run_remote.sh", "--settings", str(sb.settings))
    assert r.returncode == 2 and "missing TAG" in r.stderr
    r = sb.run("run_remote.sh", "T", "--frobnicate", "--settings", str(sb.settings))
    assert r.returncode == 2 and "unknown option '--frobnicate'" in r.stderr
    assert sb.calls() == []


@pytest.mark.parametrize("dry", [False, True])
def test_zero_grid_points(sb, dry):
    sb.write_settings()
    r = sb.remote_run("T", *(["--dry-run"] if dry else []), STUB_GRID_SIZE=0)
    assert r.returncode == 2
    assert "experiment tinyTest has 0 grid points" in r.stderr and "nothing to submit" in r.stderr
    assert sb.submissions() == []


def test_unknown_experiment(sb):
    sb.write_settings(EXPERIMENT="noSuchExperiment")
    r = sb.remote_run("T")
    assert r.returncode == 2
    assert "unknown experiment 'noSuchExperiment'" in r.stderr
    assert sb.submissions() == []


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
    if shutil.which("ssh") is None:
        pytest.skip("no ssh client installed")
    sb.write_settings(SSH_HOST="127.0.0.1", SSH_OPTS=["-p", "1", "-o", "StrictHostKeyChecking=no",
                                                      "-o", f"UserKnownHostsFile={sb.tmp}/kh"])
    env = sb.env(fake_path=False)
    env["PATH"] = f"{sb.tmp / 'onlysub'}{os.pathsep}{env['PATH']}"  # real ssh/rsync, fake sbatch/bsub
    write_exe(sb.tmp / "onlysub" / "sbatch", FAKE_SBATCH)
    write_exe(sb.tmp / "onlysub" / "bsub", FAKE_BSUB)
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
    assert sb.calls() == ["ssh unreachable.example mkdir -p -- " + str(sb.remote)]


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
    ("REMOTE_DIR", "./", "not / or the home folder"),
    ("EXPERIMENT", "a;b", "EXPERIMENT='a;b'"),
    ("TRAINER_ARGS", ["max_epochs"], "TRAINER_ARGS entry 'max_epochs'"),
    ("MODULE_LOADS", ["gcc 8"], "MODULE_LOADS entry 'gcc 8'"),
    ("EXTRA_SBATCH", ["account=x"], "EXTRA_SBATCH/EXTRA_BSUB entry 'account=x'"),
    ("WANDB", "maybe", "WANDB='maybe'"),
    ("SOME_TYPO", "1", "unknown setting 'SOME_TYPO'"),
])
def test_bad_setting(sb, key, value, message):
    sb.write_settings(**{key: value})
    r = sb.remote_run("T", "--dry-run")
    assert r.returncode == 2, r.stdout
    assert message in r.stderr
    assert sb.calls() == []


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


# ---------------------------------------------------------------------- fetch_results.sh
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
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    scripts = sorted(str(p) for p in (REPO / "bash_files").rglob("*.sh") if p.name != "settings.sh")
    scripts += sorted(str(p) for p in REFERENCE.glob("*.job.sh"))
    r = subprocess.run(["shellcheck", "-x", *scripts], capture_output=True, text=True, cwd=REPO / "bash_files")
    assert r.returncode == 0, r.stdout + r.stderr
