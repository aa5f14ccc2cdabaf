"""One worker per GPU on a node: `python sweep.py hydra/launcher=gpu_pool ...` (conf/hydra/launcher/gpu_pool.yaml).

Built on hydra-submitit-launcher's local launcher (submitit's LocalExecutor runs each job in its own process,
with its timeout, signals and logs under `submitit_folder`). What it adds is the scheduling: the node's GPUs
form a pool; a job starts only when a GPU is free, with `CUDA_VISIBLE_DEVICES` set to that one GPU, and the
GPU returns to the pool when the job ends. So G GPUs run G cells (or shards) at once, each on its own device,
and the rest of the grid waits its turn. (Plain `submitit_local` starts every job at once and hands each the
same `range(gpus_per_node)`.)

The pool is `gpus` when set (a count, or a list of device names: indices, or UUIDs as nvidia-smi -L gives),
else the entries of the parent's CUDA_VISIBLE_DEVICES when it is set (a SLURM allocation, say), else
`torch.cuda.device_count()` devices. A plugin must live in the `hydra_plugins` namespace package, which is
why this file is not under harness/.
"""
from __future__ import annotations

import logging
import os
import shlex
import time
from pathlib import Path
from typing import Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher

log = logging.getLogger(__name__)


def pool_devices(gpus=None, environ=None) -> list[str]:
    """The GPUs a worker may take, as CUDA_VISIBLE_DEVICES entries."""
    environ = os.environ if environ is None else environ
    if gpus is not None and not isinstance(gpus, (str, int)):
        devices = [str(g) for g in gpus]
    elif gpus is not None:
        devices = [str(g) for g in range(int(gpus))]
    elif environ.get("CUDA_VISIBLE_DEVICES", "").strip():
        devices = [d.strip() for d in environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    else:
        import torch  # only here: plugin discovery imports this module on every Hydra start

        devices = [str(g) for g in range(torch.cuda.device_count())]
    if not devices:
        from core.errors import ConfigError

        raise ConfigError("hydra/launcher=gpu_pool found no GPU on this node (CUDA_VISIBLE_DEVICES is empty and "
                          "torch sees none); set hydra.launcher.gpus, or use hydra/launcher=local_parallel on a CPU.")
    if len(set(devices)) != len(devices):
        from core.errors import ConfigError

        raise ConfigError(f"hydra.launcher.gpus lists a GPU twice ({devices}); give each device once.")
    return devices


class GPUPoolLauncher(BaseSubmititLauncher):
    _EXECUTOR = "local"

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        assert self.config is not None
        devices = pool_devices(self.params.get("gpus"))
        free = list(devices)
        executor = submitit.AutoExecutor(cluster="local", folder=self.params["submitit_folder"])
        setup = list(self.params.get("setup") or [])
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"gpu_pool: {len(job_overrides)} jobs on GPUs {','.join(devices)}; sweep output dir {sweep_dir}")

        pending = list(enumerate(job_overrides, start=initial_job_idx))
        running, results, errors = {}, {}, []
        poll = float(self.params.get("poll_s", 0.5))
        while pending or running:
            while free and pending:
                device, (idx, overrides) = free.pop(0), pending.pop(0)
                # submitit sets CUDA_VISIBLE_DEVICES from integer indices only; an export in the job's shell
                # setup takes any device name (MIG or GPU UUIDs) and runs before the job's Python starts
                executor.update_parameters(timeout_min=self.params.get("timeout_min", 60), tasks_per_node=1,
                                           gpus_per_node=0, setup=[f"export CUDA_VISIBLE_DEVICES={shlex.quote(device)}",
                                                                   *setup])
                log.info(f"\t#{idx} on GPU {device}: {' '.join(filter_overrides(overrides))}")
                job = executor.submit(self, list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}",
                                      Singleton.get_state())
                running[idx] = (device, job)
            for idx, (device, job) in list(running.items()):
                if job.done():
                    del running[idx]
                    free.append(device)
                    try:
                        results[idx] = job.results()[0]
                    except Exception as e:  # noqa: BLE001 - the process itself failed; the other jobs go on
                        errors.append(e)
            if running:
                time.sleep(poll)
        if errors:
            raise errors[0]
        return [results[i] for i in sorted(results)]
