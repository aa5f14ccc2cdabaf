"""Solvers against exact identities and the exact posterior of the Gaussian-mixture world."""
import pytest
import torch

from metrics.posterior import posterior_metrics, random_directions, sliced_w2
from solvers.common import timesteps
from solvers.ddim import DDIM
from solvers.ddpm import DDPM
from solvers.dps import DPS
from solvers.exact import ExactPosterior
from core.errors import ConfigError
from tasks.inpaint import BoxInpainting
from core.rng import generator, generators
from tasks.sr import AvgPoolSR
from tests.helpers import measured

SIGMA = {"sigma": 0.05}


def test_timestep_grids():
    assert timesteps(1000, 10, "adm") == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    assert timesteps(1000, 10, "leading") == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert timesteps(1000, 10, "trailing") == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    assert timesteps(1000, 1000, "adm") == list(range(999, -1, -1))
    with pytest.raises(ConfigError, match="steps"):
        timesteps(1000, 0)


def test_ddpm_is_ddim_with_eta_one(prior):
    task = AvgPoolSR((1, 16, 16), SIGMA).bind({})
    y = torch.zeros(4, 1, 4, 4)
    a = DDPM(steps=50).solve(prior, task, y, generators(range(4), "s"))
    b = DDIM(steps=50, eta=1.0).solve(prior, task, y, generators(range(4), "s"))
    assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("solver", [DDIM(steps=100, eta=0.0), DDPM(steps=100)])
def test_sampler_with_exact_scores_reproduces_the_prior(prior, solver):
    n = 256
    y = torch.zeros(n, 1, 4, 4)
    x = solver.solve(prior, AvgPoolSR((1, 16, 16), SIGMA).bind({}), y, generators(range(n), "prior-test"))
    ref = prior.sample_prior(generators(range(4096), "prior-ref")).flatten(1).double()
    fresh = prior.sample_prior(generators(range(n), "prior-fresh")).flatten(1).double()
    dirs = random_directions(256, 256, "prior-test")
    got, floor = sliced_w2(x.flatten(1), ref, dirs), sliced_w2(fresh, ref, dirs)
    assert got < 1.5 * floor, (got, floor)
    assert (x.flatten(1).double().mean(0) - ref.mean(0)).abs().max() < 0.15


def test_exact_solver_sits_at_the_noise_floor_and_dps_above_it(prior):
    """One measurement, 64 samples each: the table in the README comes from run.py on the same world."""
    task = BoxInpainting((1, 16, 16), SIGMA, box=8, margin=1)
    x, bound, y = measured(prior, task, [7])
    post = prior.posterior(bound, y)
    n = 64
    yn, tn = y.repeat(n, 1, 1, 1), bound.repeat(n)
    exact = ExactPosterior().solve(prior, tn, yn, generators(range(n), "exact"))
    dps = DPS(steps=200, scale=0.1).solve(prior, tn, yn, generators(range(n), "dps"))
    m_exact = posterior_metrics(exact, post, 7)
    m_dps = posterior_metrics(dps, post, 7)
    assert m_exact["sw2"] < 1.3 * m_exact["sw2_floor"]
    assert m_exact["mean_err"] < 3 * m_exact["mean_err_floor"]
    assert m_dps["sw2"] > 1.5 * m_dps["sw2_floor"], (m_dps, m_exact)


def test_dps_paper_form_equals_code_form_with_half_the_scale(prior):
    task = AvgPoolSR((1, 16, 16), SIGMA)
    _, bound, y = measured(prior, task, [0, 1, 2])
    a = DPS(steps=40, scale=0.4, form="code").solve(prior, bound, y, generators(range(3), "f"))
    b = DPS(steps=40, scale=0.2, form="paper").solve(prior, bound, y, generators(range(3), "f"))
    assert torch.allclose(a, b, atol=1e-4)


def test_dps_does_not_depend_on_batch_size(prior):
    task = BoxInpainting((1, 16, 16), SIGMA)
    ids = [0, 1, 2, 3, 4]
    _, bound, y = measured(prior, task, ids)
    gens = lambda sel: [generator("batch", i) for i in sel]  # noqa: E731
    full = DPS(steps=30, scale=0.5).solve(prior, bound, y, gens(ids))
    alone = DPS(steps=30, scale=0.5).solve(prior, bound.index([3]), y[3:4], gens([3]))
    pair = DPS(steps=30, scale=0.5).solve(prior, bound.index([3, 0]), y[[3, 0]], gens([3, 0]))
    assert (full[3] - alone[0]).abs().max() < 1e-5
    assert (full[3] - pair[0]).abs().max() < 1e-5


@pytest.mark.parametrize("solver,nfe,vjp", [(DPS(steps=25), 25, 25), (DDIM(steps=25), 25, 0), (DDPM(steps=25), 25, 0),
                                            (ExactPosterior(), 0, 0)])
def test_cost_counted_by_the_prior(prior, solver, nfe, vjp):
    task = BoxInpainting((1, 16, 16), SIGMA)
    _, bound, y = measured(prior, task, [0, 1, 2])
    prior.cost.reset()
    solver.solve(prior, bound, y, generators(range(3), "c"))
    assert prior.cost.nfe / 3 == nfe and prior.cost.vjp / 3 == vjp


def test_vjp_counts_backward_passes_not_bookkeeping(prior):
    """Two backward passes through one evaluation count twice; a forward under no_grad counts none."""
    x = torch.randn(2, 1, 16, 16, requires_grad=True)
    prior.cost.reset()
    x0 = prior.x0(x, 500)
    torch.autograd.grad(x0.sum(), x, retain_graph=True)
    torch.autograd.grad(x0.square().sum(), x)
    with torch.no_grad():
        prior.x0(x, 500)
    assert prior.cost.snapshot()["nfe"] == 4 and prior.cost.vjp == 4


def test_solvers_refuse_what_they_cannot_serve(prior):
    poisson = BoxInpainting((1, 16, 16), {"kind": "poisson", "rate": 50.0})
    with pytest.raises(ConfigError, match="Gaussian measurement noise"):
        ExactPosterior().check(prior, poisson)
    with pytest.raises(ConfigError, match="form"):
        DPS(form="bogus")


def test_exact_solver_refuses_a_network_prior():
    from models.base import Prior, linear_alphas_cumprod

    class Net(Prior):  # a stand-in pixel prior with a real (tiny) network
        def __init__(self):
            super().__init__(linear_alphas_cumprod(), (1, 16, 16), name="tiny")
            self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

        def network(self, x_t, t, cond=None):
            return self.conv(x_t)

    with pytest.raises(ConfigError, match="exact Gaussian-mixture prior"):
        ExactPosterior().check(Net(), BoxInpainting((1, 16, 16), SIGMA))
