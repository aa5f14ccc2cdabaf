"""LatentDAPS: cost counts by hand, no UNet VJP, the MCMC kernels against their closed-form Gaussian moments
(a linear "latent" prior whose decoder is D(z) = a·z), the gradient clamp, HMC(m = 0) = Langevin, batch
independence, runs on the tiny class-table and CLIP-text SD priors, refusals and bad parameters."""
import pytest
import torch

from models.base import Prior, counted, linear_alphas_cumprod
from models.latent import LatentPrior
from solvers.latent_daps import LatentDAPS
from core.errors import ConfigError
from tasks.inpaint import BoxInpainting
from core.rng import generators, randn
from tests.helpers import measured
from tests.latent_world import SHAPE, batch_independent, refuses_pixel_prior, run

SMALL = dict(annealing_steps=3, ode_steps=2, mcmc_steps=2)


# -- costs -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["inpaint", "sr"])
@pytest.mark.parametrize("mcmc", ["hmc", "langevin"])
def test_counts_by_hand_and_no_unet_vjp(latent, kind, mcmc):
    """3 levels × 2 Euler steps = 6 NFEs; 3 levels × 2 MCMC steps = 6 decodes + decoder VJPs, + 1 final decode;
    the UNet is never differentiated (vjp = 0 is the prior's own backward counter)."""
    _, c = run(LatentDAPS(**SMALL, mcmc=mcmc), latent, kind)
    assert c == {"nfe": 6, "vjp": 0, "encode": 0, "decode": 7, "decode_vjp": 6, "encode_vjp": 0}
    _, c = run(LatentDAPS(annealing_steps=4, ode_steps=3, mcmc_steps=0), latent, kind)  # the prior alone
    assert c == {"nfe": 12, "vjp": 0, "encode": 0, "decode": 1, "decode_vjp": 0, "encode_vjp": 0}


def test_text_sd_prior_with_cfg(sd_dir):  # noqa: F811
    """Tiny CLIP-text SD pipeline, CFG 3: 2 NFEs per ODE step, still no UNet VJP and no UNet gradient."""
    prior = LatentPrior(str(sd_dir), guidance_scale=3.0)
    x, c = run(LatentDAPS(**SMALL), prior, "sr", cond=prior.embed(["a cat", "a dog"]))
    assert c == {"nfe": 12, "vjp": 0, "encode": 0, "decode": 7, "decode_vjp": 6, "encode_vjp": 0}
    assert all(p.grad is None for p in prior.unet.parameters())


def test_the_data_term_moves_the_sample(latent):
    _, bound, y = measured(None, BoxInpainting(SHAPE, {"sigma": 0.05}, box=8, margin=1), [0])
    a = LatentDAPS(**SMALL).solve(latent, bound, y, generators([0], "d"))
    b = LatentDAPS(**SMALL, tau=1e6).solve(latent, bound, y, generators([0], "d"))  # data weight ~ 0
    assert not torch.allclose(a, b, atol=1e-4)


# -- the MCMC kernel on an exactly Gaussian target -------------------------------------------------
class LinearLatent(Prior):
    """A "latent" prior with decoder D(z) = a·z (counted like LatentPrior's); the network is never called."""

    is_latent = True

    def __init__(self, shape, a: float):
        super().__init__(linear_alphas_cumprod(), shape, shape, name="linear_latent")
        self.a = a

    def network(self, x_t, t, cond=None):
        return torch.zeros_like(x_t)

    def decode(self, state):
        self.cost.decode += state.shape[0]
        return counted(self.a * state, self.cost, "decode_vjp")


def gaussian_case(n=400, a=0.5, tau=0.5, sigma=0.4):
    """A box mask on 1×8×8 with D(z) = a·z: the MCMC target exp(−‖m⊙(az) − y‖²/τ²) N(z; ẑ0, σ²I) is Gaussian with
    per-coordinate precision λ = 2a²m/τ² + 1/σ² and mean μ = (2amy/τ² + ẑ0/σ²)/λ (m = 0: data weight 0)."""
    shape = (1, 8, 8)
    task = BoxInpainting(shape, {"sigma": 0.05}, box=4, margin=1)
    bound = task.bind(task.draw([0], 0)).to("cpu", torch.float64)
    y = torch.randn(1, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    z0_hat = torch.randn(1, *shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    m = bound.A(torch.ones_like(y))
    lam = 2 * a * a * m / tau ** 2 + 1 / sigma ** 2
    mu = (2 * a * m * y / tau ** 2 + z0_hat / sigma ** 2) / lam
    return LinearLatent(shape, a), bound.repeat(n), y.repeat(n, 1, 1, 1), z0_hat.repeat(n, 1, 1, 1), m, lam, mu


def standardised(z, mean, var, m):
    """(z − E z)/sd per coordinate, for the observed (m = 1) and unobserved (m = 0, data weight 0) coordinates."""
    s = (z - mean) / var.sqrt()
    return [s[:, m[0].bool()], s[:, ~m[0].bool()]]


def assert_standard_normal(groups):
    for s in groups:
        n = s.numel()  # ≥ 400 × 16 values: the mean's standard error is ≤ 0.013, the variance's ≤ 0.018
        assert s.mean().abs() < 5 / n ** 0.5 and (s.var() - 1).abs() < 5 * (2 / n) ** 0.5, (s.mean(), s.var())


def test_langevin_matches_the_closed_form_of_its_gaussian_chain():
    """From ẑ0, K Langevin steps z ← z − ηλ(z − μ) + √(2η)ξ give z_K ~ N(μ + ρ^K(ẑ0 − μ), 2η(1 − ρ^{2K})/(1 − ρ²)),
    ρ = 1 − ηλ; the data-weight-0 coordinates tend to N(ẑ0, σ²/(1 − η/(2σ²))) ≈ N(ẑ0, σ²)."""
    tau, sigma, eta, K = 0.5, 0.4, 0.01, 30
    prior, bound, y, z0_hat, m, lam, mu = gaussian_case(tau=tau, sigma=sigma)
    solver = LatentDAPS(mcmc_steps=K, mcmc="langevin", tau=tau, grad_clamp=None)
    prior.cost.reset()
    z = solver.sample_z0(prior, bound, y, z0_hat, sigma, eta, generators(range(len(y)), "l"))
    assert prior.cost.decode == prior.cost.decode_vjp == K * len(y) and prior.cost.nfe == 0
    rho = 1 - eta * lam
    mean, var = mu + rho ** K * (z0_hat[:1] - mu), 2 * eta * (1 - rho ** (2 * K)) / (1 - rho ** 2)
    assert_standard_normal(standardised(z, mean, var, m))
    # data weight 0: mean ẑ0 and, run long, variance σ² up to the Euler-Maruyama factor
    free = ~m[0].bool()
    assert torch.allclose(mu[0][free], z0_hat[0][free])
    assert abs(2 * eta / (1 - (1 - eta / sigma ** 2) ** 2) / (sigma ** 2 / (1 - eta / (2 * sigma ** 2))) - 1) < 1e-12


def test_hmc_matches_the_closed_form_of_its_gaussian_chain():
    """Damped HMC is linear per coordinate in (d = z − μ, v): d' = (1 − h²λ)d + hm v + hcξ, v' = −hλ d + m v + cξ
    (h = √η, c = √(2(1 − m))), v_0 ~ N(0, 1), d_0 = ẑ0 − μ: its mean and variance are iterated exactly."""
    tau, sigma, eta, mom, K = 0.5, 0.4, 0.004, 0.8, 25
    prior, bound, y, z0_hat, m, lam, mu = gaussian_case(tau=tau, sigma=sigma)
    solver = LatentDAPS(mcmc_steps=K, mcmc="hmc", momentum=mom, tau=tau, grad_clamp=None)
    z = solver.sample_z0(prior, bound, y, z0_hat, sigma, eta, generators(range(len(y)), "h"))
    h, c = eta ** 0.5, (2 * (1 - mom)) ** 0.5
    M = [[1 - h * h * lam, h * mom * torch.ones_like(lam)], [-h * lam, mom * torch.ones_like(lam)]]
    b = [h * c, c]
    mean, cov = [z0_hat[:1] - mu, torch.zeros_like(mu)], [[torch.zeros_like(mu), 0 * mu], [0 * mu, 1 + 0 * mu]]
    for _ in range(K):
        mean = [M[i][0] * mean[0] + M[i][1] * mean[1] for i in range(2)]
        MS = [[M[i][0] * cov[0][j] + M[i][1] * cov[1][j] for j in range(2)] for i in range(2)]
        cov = [[MS[i][0] * M[j][0] + MS[i][1] * M[j][1] + b[i] * b[j] for j in range(2)] for i in range(2)]
    assert_standard_normal(standardised(z, mu + mean[0], cov[0][0], m))


def test_hmc_without_momentum_is_langevin(latent):
    _, bound, y = measured(None, BoxInpainting(SHAPE, {"sigma": 0.05}, box=8, margin=1), [0, 1])
    z0_hat = torch.randn(2, *latent.state_shape, generator=torch.Generator().manual_seed(3))
    run_ = lambda s: s.sample_z0(latent, bound, y, z0_hat, 0.5, 1e-5, generators(range(2), "m"))  # noqa: E731
    a = run_(LatentDAPS(mcmc_steps=3, mcmc="hmc", momentum=0.0))
    b = run_(LatentDAPS(mcmc_steps=3, mcmc="langevin"))
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, run_(LatentDAPS(mcmc_steps=3, mcmc="hmc", momentum=0.5)), atol=1e-4)


def test_one_langevin_step_clamps_the_data_gradient():
    """z1 = ẑ0 + η(−clamp(∇‖A(D ẑ0) − y‖², ±c)/τ²) + √(2η)ξ, with ∇ = 2a·m⊙(a ẑ0 − y) by hand."""
    a, tau, sigma, eta, clamp = 0.5, 0.1, 0.4, 1e-3, 0.05
    prior, bound, y, z0_hat, m, _, _ = gaussian_case(n=2, a=a)
    solver = LatentDAPS(mcmc_steps=1, mcmc="langevin", tau=tau, grad_clamp=clamp)
    z1 = solver.sample_z0(prior, bound, y, z0_hat, sigma, eta, generators(range(2), "c"))
    xi = randn(generators(range(2), "c"), (1, 8, 8), dtype=torch.float64)
    g = 2 * a * m * (a * z0_hat - y)
    assert (g.abs() > clamp).any()  # the clamp is active on some coordinates
    assert torch.allclose(z1, z0_hat - eta * g.clamp(-clamp, clamp) / tau ** 2 + (2 * eta) ** 0.5 * xi, atol=1e-12)


def test_step_size_decays_over_the_official_grid():
    s = LatentDAPS(annealing_steps=4, lr=1.0, lr_min_ratio=0.5)
    assert [s.step_size(k) for k in range(4)] == pytest.approx([1.0, 0.9, 0.8, 0.7])  # k/(N+1), as the code


# -- batching, refusals, parameters ----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["inpaint", "sr"])
def test_batch_independent(latent, kind):
    batch_independent(LatentDAPS(**SMALL, tau=0.1), latent, kind)


def test_refuses_pixel_priors(prior):
    refuses_pixel_prior(LatentDAPS(), prior)


def test_config_defaults_are_the_constructor_defaults():
    from harness.build import instantiate
    from harness.cli import compose

    assert instantiate("solver", compose(["solver=latent_daps"]).solver).describe() == LatentDAPS().describe()


@pytest.mark.parametrize("kwargs, key", [({"mcmc": "mh"}, "mcmc"), ({"momentum": 1.0}, "momentum"),
                                         ({"momentum": -0.1}, "momentum"), ({"grad_clamp": 0.0}, "grad_clamp"),
                                         ({"annealing_steps": 0}, "annealing_steps"), ({"mcmc_steps": -1}, "mcmc_steps"),
                                         ({"tau": 0.0}, "tau"), ({"lr": -1e-4}, "lr"),
                                         ({"sigma_min": 20.0}, "sigma_"), ({"ode_sigma_min": 0.5}, "sigma_")])
def test_bad_parameters(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        LatentDAPS(**kwargs)
