"""The pixel test world on the exact Gaussian-mixture prior: tasks, the exact-posterior error of a solver, and
the baselines (DDIM, A⁺y) solvers are compared against."""
from metrics.posterior import posterior_metrics
from solvers.ddim import DDIM
from solvers.pinv import PseudoInverse
from tasks.blur import GaussianBlur
from tasks.inpaint import BoxInpainting
from core.rng import generators
from tasks.sr import AvgPoolSR
from tests.helpers import measured

SIGMA = {"sigma": 0.05}
SHAPE = (1, 16, 16)
TASKS = {
    "inpaint": lambda: BoxInpainting(SHAPE, SIGMA, box=8, margin=1),
    "sr4": lambda: AvgPoolSR(SHAPE, SIGMA, factor=4),
    "deblur": lambda: GaussianBlur(SHAPE, SIGMA, kernel_size=9, sigma=1.0, boundary="circular"),
}
IMAGE, N = 7, 16


_POST = {}


def posterior_err(prior, solver, tname, n=N, image=IMAGE, seed="s0"):
    key = (id(prior), tname, image)
    if key not in _POST:  # the measurement and its exact posterior, once per (prior, task)
        _, bound, y = measured(prior, TASKS[tname](), [image])
        _POST[key] = bound, y, prior.posterior(bound, y)
    bound, y, post = _POST[key]
    out = solver.solve(prior, bound.repeat(n), y.repeat(n, 1, 1, 1), generators(range(n), seed))
    return posterior_metrics(out, post, image, n_ref=512)  # 2048 costs 2.5 s per call on this CPU


_BASE = {}


def baseline(prior, tname):
    if tname not in _BASE:
        _BASE[tname] = min(posterior_err(prior, DDIM(steps=20), tname)["mean_err"],
                           posterior_err(prior, PseudoInverse(), tname)["mean_err"])
    return _BASE[tname]
