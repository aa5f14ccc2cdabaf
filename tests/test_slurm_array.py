"""A 2-cell x 4-shard sweep under hydra/launcher=slurm with fake sbatch/srun/sacct on PATH: submitit makes ONE
array of 8 tasks whose pickled jobs carry the (cell, shard) overrides; the test runs the 8 pickled jobs as
subprocesses (the nodes), SIGKILLs one after its first batch (a timeout), reruns it (the requeue: it resumes
after the recorded batch), and both cells finish with every image once."""
import glob
import os
import re
import signal
import stat
import subprocess
import sys
import time

import pandas as pd

from core.files import REPO_ROOT as ROOT

JOB = "4242"
FAKES = {
    "sbatch": f'#!/bin/sh\ncp "$1" "$FAKE_DIR/sbatch_script.sh"\necho "Submitted batch job {JOB}"\n',
    "srun": "#!/bin/sh\nexit 0\n",
    "sacct": "#!/bin/sh\necho 'JobID|State|NodeList'\n"
             + "".join(f"echo '{JOB}_{i}|RUNNING|node{i}'\n" for i in range(8)),
}


def test_cells_times_shards_are_one_array_and_a_killed_task_resumes(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in FAKES.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "FAKE_DIR": str(tmp_path),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env = {k: v for k, v in env.items() if not k.startswith("SLURM_")}
    sweep = subprocess.Popen(
        [sys.executable, "sweep.py", "hydra/launcher=slurm", "+experiment=gmm", "solver=dps,ddim", "solver.steps=4",
         "dataset.n=8", "metrics.n_ref=16", "compute.batch_size=1", "compute.device=cpu", "run.shards=4",
         f"run.root={tmp_path}/runs", f"run.leaderboard={tmp_path}/lb.csv", f"run.cache={tmp_path}/cache",
         "run.progress=false", f"hydra.sweep.dir={tmp_path}/sweep"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    pickles = []
    while len(pickles) < 8 and sweep.poll() is None and time.time() < deadline:
        time.sleep(0.5)
        pickles = sorted(glob.glob(f"{tmp_path}/sweep/.submitit/*/*_submitted.pkl"))
    assert len(pickles) == 8, sweep.communicate()[0][-3000:] if sweep.poll() is not None else "no pickles"
    script = (tmp_path / "sbatch_script.sh").read_text()
    assert re.search(r"#SBATCH --array=0-7%\d+", script)  # one array of 8 tasks
    folder = re.search(r"submitit\.core\._submit (\S+)", script).group(1).strip("'")
    exported = dict(re.findall(r"^export (\w+)=(\S+)$", script, re.M))  # what the sbatch script sets on the node
    assert exported.get("SUBMITIT_EXECUTOR") == "slurm"

    import cloudpickle  # submitit's own pickler: the per-task overrides as the launcher handed them to the nodes

    pairs = set()
    for p in pickles:
        with open(p, "rb") as f:
            overrides = cloudpickle.load(f).args[0]
        d = dict(o.lstrip("+").split("=", 1) for o in overrides)
        pairs.add((d["solver"], d["run.shard"]))
    assert pairs == {(s, f"{k}/4") for s in ("dps", "ddim") for k in range(4)}

    def task(i):  # one array task on its node, as srun would start it
        node = {**env, **exported, "SLURM_JOB_ID": str(5000 + i), "SLURM_ARRAY_JOB_ID": JOB, "SLURM_ARRAY_TASK_ID": str(i),
                "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NTASKS": "1",
                "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": f"node{i}"}
        log = open(tmp_path / f"task{i}.log", "a")
        return subprocess.Popen([sys.executable, "-u", "-m", "submitit.core._submit", folder], cwd=ROOT, env=node,
                                stdout=log, stderr=subprocess.STDOUT)

    parts = lambda: len(glob.glob(f"{tmp_path}/runs/*/parts/*.csv"))  # noqa: E731
    for i in range(8):
        before = parts()
        p = task(i)
        if i == 2:  # the simulated timeout: killed after the first of its 2 batches
            while parts() < before + 1 and p.poll() is None:
                time.sleep(0.01)
            assert p.poll() is None
            p.send_signal(signal.SIGKILL)
            p.wait()
            assert parts() == before + 1
            p = task(i)  # the requeue
        assert p.wait(timeout=300) == 0, (tmp_path / f"task{i}.log").read_text()[-3000:]
    out = sweep.communicate(timeout=240)[0]
    assert sweep.returncode == 0, out[-3000:]
    runs = sorted(glob.glob(f"{tmp_path}/runs/*"))
    assert len(runs) == 2
    for d in runs:
        rows = pd.read_csv(os.path.join(d, "images.csv"), dtype={"image_id": str})
        assert list(rows["image_id"]) == [str(i) for i in range(8)]  # every image once
        assert len(glob.glob(os.path.join(d, "parts", "*.csv"))) == 8  # the killed task did not redo its batch
    lb = pd.read_csv(tmp_path / "lb.csv")
    assert sorted(lb["solver"]) == ["ddim", "dps"] and (lb["n_images"] == 8).all()
