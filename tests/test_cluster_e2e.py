"""End to end against a REAL Slurm cluster over ssh (bash_files/local_cluster/start.sh).

    eval "$(bash bash_files/local_cluster/start.sh)"       # Slurm 22.05 + sshd 'localcluster'
    .venv/bin/python -m pytest -m cluster tests/test_cluster_e2e.py

Skipped (with the reason) unless `sbatch` is on PATH and `ssh localcluster true` works.
The "cluster" is this machine: the code goes by rsync over ssh to a fresh
/tmp/mtl-e2e-XXXX (REMOTE_DIR), jobs run there, results come back by fetch_results.sh into
a scratch copy of this checkout (the working tree's runs/ is never touched). The remote
venv is this repository's .venv (settings REMOTE_VENV), so no venv is built.
The grid is experiments/tinyTest (3 points, seconds each). About 2-3 minutes on 2 cores.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HOST = os.environ.get("LOCAL_CLUSTER_SSH_HOST", "localcluster")
WAIT = 180  # seconds, per wait


def _cluster_missing() -> str | None:
    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        return "no Slurm client (sbatch) on PATH: start the local cluster with bash bash_files/local_cluster/start.sh"
    try:
        r = subprocess.run(["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", HOST, "true"],
                           capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"ssh {HOST} true failed ({err}): start the local cluster (bash_files/local_cluster/start.sh)"
    if r.returncode != 0:
        return f"ssh {HOST} true failed: {r.stderr.strip()} (start bash_files/local_cluster/start.sh)"
    if not (REPO / "experiments" / "tinyTest").is_dir():
        return "experiments/tinyTest (the tiny 3-point grid) does not exist"
    return None


_REASON = _cluster_missing()
# CI sets MTL_REQUIRE_CLUSTER=1 after starting the cluster: there a missing cluster fails.
_REQUIRED = os.environ.get("MTL_REQUIRE_CLUSTER") == "1"
pytestmark = [pytest.mark.cluster,
              pytest.mark.skipif(_REASON is not None and not _REQUIRED, reason=_REASON or "")]


def test_cluster_is_reachable():
    assert _REASON is None, _REASON


class Cluster:
    """A scratch local checkout, a remote folder on the local cluster, settings, helpers."""

    def __init__(self, root: Path):
        self.local = root / "checkout"
        self.remote = Path(tempfile.mkdtemp(prefix="mtl-e2e-", dir="/tmp"))
        subprocess.run(["rsync", "-a", "--exclude=.git/", "--exclude=.venv/", "--exclude=/runs/",
                        "--exclude=/wandb/", "--exclude=__pycache__/", "--exclude=.pytest_cache/",
                        "--exclude=bash_files/settings.sh", f"{REPO}/", f"{self.local}/"], check=True)
        venv = REPO / ".venv" if (REPO / ".venv" / "bin" / "python").exists() else Path(sys.prefix)
        self.python = str(venv / "bin" / "python")
        self.settings = root / "settings.sh"
        self.settings_text = (
            f"SSH_HOST={HOST}\nREMOTE_DIR={self.remote}\nSCHEDULER=slurm\nREMOTE_VENV={venv}\n"
            "EXPERIMENT=tinyTest\nWANDB=disabled\nTIME=00:10:00\nCPUS=1\nMEM=1G\n"
        )
        self.write_settings()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("MTL_", "SLURM_"))}
        self.env["MTL_PYTHON"] = self.python
        self.jobs: list[int] = []

    def write_settings(self, extra: str = "") -> None:
        self.settings.write_text(self.settings_text + extra)

    def script(self, name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        r = subprocess.run(["bash", str(self.local / "bash_files" / name), *args, "--settings",
                            str(self.settings)], capture_output=True, text=True, env=self.env,
                           cwd=self.local, timeout=timeout)
        return r

    def submit(self, tag: str, *args: str) -> int:
        r = self.script("run_remote.sh", tag, *args)
        assert r.returncode == 0, r.stdout + r.stderr
        m = re.search(r"^job id: (\d+)$", r.stdout, re.M)
        assert m, r.stdout
        assert f"ssh {HOST} squeue -j {m.group(1)}" in r.stdout
        assert f"bash bash_files/fetch_results.sh {tag}" in r.stdout
        self.jobs.append(int(m.group(1)))
        return int(m.group(1))

    def logs(self, tag: str) -> str:
        out = []
        for f in sorted((self.remote / "runs" / tag / "cluster").glob("*.out")):
            out.append(f"----- {f.name}\n{f.read_text()[-3000:]}")
        return "\n".join(out)

    def wait_job(self, job: int, tag: str) -> None:
        end = time.time() + WAIT
        while time.time() < end:
            r = subprocess.run(["squeue", "-h", "-j", str(job), "-o", "%i %T %r"], capture_output=True, text=True)
            if r.returncode == 0 and not r.stdout.strip():
                return
            time.sleep(0.5)
        subprocess.run(["scancel", str(job)])
        pytest.fail(f"job {job} not finished after {WAIT}s\n{self.logs(tag)}")

    def remote_point(self, tag: str, index: int) -> Path:
        return self.remote / "runs" / tag / f"config{index}"

    def wait_epochs(self, job: int, tag: str, index: int, epochs: int) -> int:
        """Wait until element `index` is mid-training: running, >= `epochs` epochs logged
        and a checkpoints/last.ckpt written. Returns the number of epochs logged."""
        point = self.remote_point(tag, index)
        end = time.time() + WAIT
        seen = ""
        while time.time() < end:
            state = subprocess.run(["squeue", "-h", "-j", f"{job}_{index}", "-o", "%T"],
                                   capture_output=True, text=True).stdout.strip()
            rows = metric_epochs(point / "metrics.csv")
            ckpt = (point / "checkpoints" / "last.ckpt").exists()
            status = (json.loads((point / "summary.json").read_text()).get("status")
                      if (point / "summary.json").exists() else None)
            seen = f"job state {state or 'gone'}, status {status}, {len(rows)} epochs logged, last.ckpt: {ckpt}"
            if state == "RUNNING" and status == "running" and ckpt and len(rows) >= epochs:
                return len(rows)
            if status in ("done", "failed", "diverged"):
                break
            time.sleep(0.2)
        pytest.fail(f"element {index} of job {job} was never mid-training with a checkpoint (needs "
                    f"checkpoints/last.ckpt written during training, every checkpoint_every_n_epochs); "
                    f"last seen: {seen}\n{self.logs(tag)}")

    def fetch(self, tag: str) -> Path:
        r = self.script("fetch_results.sh", tag)
        assert r.returncode == 0, r.stdout + r.stderr
        return self.local / "runs" / tag

    def cleanup(self) -> None:
        # never leave jobs behind, also after a failure (by id, and by the e2e-* job names)
        names = ",".join(p.name for p in (self.remote / "runs").glob("e2e-*"))
        if self.jobs:
            subprocess.run(["scancel", *map(str, self.jobs)], capture_output=True)
        if names:
            subprocess.run(["scancel", f"--name={names}"], capture_output=True)
        shutil.rmtree(self.remote, ignore_errors=True)


def metric_epochs(path: Path) -> list[int]:
    if not path.exists():
        return []
    with path.open() as f:
        return [int(float(row["epoch"])) for row in csv.DictReader(f) if row.get("epoch") not in (None, "")]


def summary(run: Path, index: int) -> dict:
    return json.loads((run / f"config{index}" / "summary.json").read_text())


def restarts(job: int) -> dict[int, int]:
    """Array index -> restart count, from scontrol (records stay 300 s after the end)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", str(job)], capture_output=True, text=True).stdout
    res = {}
    for line in out.splitlines():
        task = re.search(r"ArrayTaskId=(\d+) ", line)
        count = re.search(r"Restarts=(\d+)", line)
        if task and count:
            res[int(task.group(1))] = int(count.group(1))
    return res


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("e2e"))
    yield c
    c.cleanup()


def test_grid_runs_as_a_job_array_and_comes_back(cluster):
    tag = "e2e-grid"
    job = cluster.submit(tag)
    cluster.wait_job(job, tag)
    run = cluster.fetch(tag)
    statuses = {i: summary(run, i)["status"] for i in (1, 2, 3)}
    assert statuses == {1: "done", 2: "done", 3: "done"}, cluster.logs(tag)
    for i in (1, 2, 3):  # one array element per grid point, each ran its own point
        log = (run / "cluster" / f"slurm-{job}_{i}.out").read_text()
        assert f"--num_config {i} " in log and "main.py exited with status 0" in log
    assert json.loads((run / "manifest.json").read_text())["grid_size"] == 3
    # everything done: --missing submits nothing
    r = cluster.script("run_remote.sh", tag, "--missing")
    assert r.returncode == 0 and "nothing to submit" in r.stderr, r.stderr


def test_packed_array_runs_two_points_per_element(cluster):
    """POINTS_PER_TASK=2 over tinyTest's 3 points: 2 array elements (--num_config 1-2 and 3),
    every point done after the fetch (needs main.py's --num_config ranges)."""
    tag = "e2e-packed"
    cluster.write_settings("POINTS_PER_TASK=2\n")
    r = cluster.script("run_remote.sh", tag, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert 'NUM_CONFIGS=(\n  "1-2" "3"\n)' in r.stdout
    job = cluster.submit(tag)
    cluster.wait_job(job, tag)
    run = cluster.fetch(tag)
    assert [summary(run, i)["status"] for i in (1, 2, 3)] == ["done"] * 3, cluster.logs(tag)
    logs = sorted(p.name for p in (run / "cluster").glob(f"slurm-{job}_*.out"))
    assert logs == [f"slurm-{job}_1.out", f"slurm-{job}_2.out"]
    for element, num_config in ((1, "1-2"), (2, "3")):
        log = (run / "cluster" / f"slurm-{job}_{element}.out").read_text()
        assert f"--num_config {num_config} " in log and "main.py exited with status 0" in log, log
    r = cluster.script("run_remote.sh", tag, "--missing")
    assert r.returncode == 0 and "nothing to submit" in r.stderr, r.stderr


def test_tag_used_with_another_grid_is_refused(cluster):
    """runs/TAG on the cluster holds the tinyTest grid: another experiment's grid under the
    same TAG is refused before anything is submitted."""
    tag = "e2e-grid"
    if not (cluster.remote / "runs" / tag / "manifest.json").exists():  # test above deselected
        subprocess.run(["rsync", "-a", f"{cluster.local}/", f"{cluster.remote}/"], check=True)
        subprocess.run([cluster.python, "main.py", "--experiment", "tinyTest", "--experimentbatch_name", tag,
                        "--num_config", "1", "--wandb", "disabled"], cwd=cluster.remote, check=True,
                       capture_output=True, env=cluster.env)
    cluster.write_settings()
    last_job = max(cluster.jobs, default=0)
    # (with --missing the script takes the same remote check, main.py --missing TAG)
    r = cluster.script("run_remote.sh", tag, "--experiment", "compositeSine")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "choose a new TAG" in r.stderr
    assert "job id:" not in r.stdout
    queued = subprocess.run(["squeue", "-h", "-o", "%F"], capture_output=True, text=True).stdout.split()
    assert all(int(j) <= last_job for j in queued), queued


def test_ddp_grid_launched_with_srun(cluster):
    """TASKS_PER_NODE=2: each element runs 2 processes with srun, DDP (gloo) on CPU."""
    tag = "e2e-ddp"
    cluster.write_settings("TASKS_PER_NODE=2\nTRAINER_ARGS=(accelerator:cpu devices:2 num_nodes:1 strategy:ddp)\n")
    job = cluster.submit(tag)
    cluster.wait_job(job, tag)
    run = cluster.fetch(tag)
    assert [summary(run, i)["status"] for i in (1, 2, 3)] == ["done"] * 3, cluster.logs(tag)
    log = (run / "cluster" / f"slurm-{job}_1.out").read_text()
    assert "srun --kill-on-bad-exit=1 --cpus-per-task=1 " in log
    assert "All distributed processes registered. Starting with 2 processes" in log


def test_killed_element_resumes_from_its_checkpoint_with_missing(cluster):
    tag = "e2e-kill"
    cluster.write_settings("TRAINER_ARGS=(max_epochs:12)\n")
    job = cluster.submit(tag)
    at_kill = cluster.wait_epochs(job, tag, 2, epochs=3)
    subprocess.run(["scancel", f"{job}_2"], check=True)  # a hard kill (node failure, time limit)
    cluster.wait_job(job, tag)
    run = cluster.fetch(tag)
    assert summary(run, 1)["status"] == "done" and summary(run, 3)["status"] == "done", cluster.logs(tag)
    assert summary(run, 2)["status"] != "done"
    before = {i: (run / f"config{i}" / "summary.json").read_text() for i in (1, 3)}

    r = cluster.script("run_remote.sh", tag, "--missing")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 element(s) (2)" in r.stdout                    # only the unfinished point
    job2 = int(re.search(r"^job id: (\d+)$", r.stdout, re.M).group(1))
    cluster.jobs.append(job2)
    cluster.wait_job(job2, tag)
    run = cluster.fetch(tag)

    s2 = summary(run, 2)
    assert s2["status"] == "done", cluster.logs(tag)
    assert s2["epochs"] == 12
    assert s2.get("resumed_from"), f"config2 was not resumed from a checkpoint: {s2}"
    epochs = metric_epochs(run / "config2" / "metrics.csv")
    assert epochs.count(0) == 1, f"config2 restarted from epoch 0 ({epochs}), killed after {at_kill} epochs"
    assert sorted(set(epochs)) == list(range(12))
    # nothing finished was rerun: only element 2 ran in the second job, 1 and 3 are untouched
    assert sorted(p.name for p in (run / "cluster").glob(f"slurm-{job2}_*.out")) == [f"slurm-{job2}_2.out"]
    assert {i: (run / f"config{i}" / "summary.json").read_text() for i in (1, 3)} == before


def test_preemption_signal_checkpoints_and_requeues_only_its_element(cluster):
    """The warning signal (--signal=B:USR1@90) sent now: Lightning checkpoints and requeues
    <job>_2 only; the requeued element resumes from that checkpoint."""
    tag = "e2e-preempt"
    cluster.write_settings("TRAINER_ARGS=(max_epochs:12)\n")
    job = cluster.submit(tag)
    cluster.wait_epochs(job, tag, 2, epochs=3)
    subprocess.run(["scancel", "--batch", "--signal=USR1", f"{job}_2"], check=True)  # batch shell only, as B:
    end = time.time() + 60
    while time.time() < end and restarts(job).get(2, 0) < 1:
        time.sleep(0.3)
    assert restarts(job).get(2) == 1, f"element 2 was not requeued\n{cluster.logs(tag)}"
    # Slurm holds a requeued job ~2 minutes (BeginTime); start it now
    subprocess.run(["scontrol", "update", f"JobId={job}_2", "StartTime=now"], capture_output=True)
    cluster.wait_job(job, tag)
    assert restarts(job) == {1: 0, 2: 1, 3: 0}
    run = cluster.fetch(tag)
    assert [summary(run, i)["status"] for i in (1, 2, 3)] == ["done"] * 3, cluster.logs(tag)
    s2 = summary(run, 2)
    assert s2.get("resumed_from"), s2
    assert metric_epochs(run / "config2" / "metrics.csv").count(0) == 1
    log = (run / "cluster" / f"slurm-{job}_2.out").read_text()
    assert "SIGUSR1" in log and log.count("--num_config 2 ") == 2      # ran twice (appended log)
