"""A Hydra app for tests/test_gpu_pool.py: each job records its CUDA_VISIBLE_DEVICES and the time it ran,
and waits (up to a minute) until `wait_for` jobs have started, so concurrent jobs overlap for certain."""
import os
import sys
import time

import hydra
from omegaconf import DictConfig

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from harness.cli import CONF_DIR  # noqa: E402


@hydra.main(config_path=CONF_DIR, version_base=None)
def job(cfg: DictConfig):
    out = str(cfg.out)
    start = time.time()
    with open(os.path.join(out, f"start_{cfg.i}"), "w") as f:
        f.write(os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
    while len([n for n in os.listdir(out) if n.startswith("start_")]) < int(cfg.wait_for) and time.time() - start < 60:
        time.sleep(0.05)
    with open(os.path.join(out, f"done_{cfg.i}"), "w") as f:
        f.write(f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')} {start} {time.time()}")


if __name__ == "__main__":
    job()
