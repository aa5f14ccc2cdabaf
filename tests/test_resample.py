"""ReSample on tiny random SD-layout priors: cost counts by hand, the resampling step's closed form, the
inner optimisations reduce their objectives, per-sample stopping, batch independence, the DDIM limit,
CLIP-text and class-embedding priors, refusals. Random networks say nothing about quality."""
import pytest
import torch

from models.latent import LatentPrior
from solvers.ddim import DDIM
from solvers.resample import ReSample, resample_gamma, stochastic_resample
from core.errors import ConfigError
from core.rng import generators
from tests.helpers import measured
from tests.latent_world import TASKS, batch_independent, refuses_pixel_prior, run

SMALL = dict(pixel_iters=3, latent_iters=4, tol=0.0)  # tol 0: every inner loop runs all its iterations


def test_hdc_schedule_is_the_codes_thirds():
    """N = 1000: HDC every 10 steps for 0 < r ≤ 667 (N − N//3); pixel for r ≥ 333, latent below."""
    s = ReSample(steps=1000)
    got = {r: s.stage(r, 1000) for r in range(1000)}
    assert [r for r, v in got.items() if v == "latent"] == list(range(10, 333, 10))
    assert [r for r, v in got.items() if v == "pixel"] == list(range(340, 668, 10))
    assert got[0] is None and got[670] is None
    assert all(ReSample(hdc_splits=0, latent_splits=0).stage(r, 100) is None for r in range(100))
    assert {ReSample(latent_splits=2).stage(r, 100) for r in range(1, 67)} == {None, "latent"}


@pytest.mark.parametrize("kind", ["inpaint", "sr"])
def test_counts_with_hdc(latent, kind):
    """N = 9, skip 2, thirds of 3: HDC at r = 6, 4 (pixel) and r = 2 (latent), 2 time-travel NFEs each."""
    N, K_pix, K_lat, travel = 9, 3, 4, 2
    _, c = run(ReSample(steps=N, skip=2, travel=travel, **SMALL), latent, kind)
    assert c == {"nfe": N + 3 * travel, "vjp": N, "encode": 2,  # one E(x*) per pixel stage
                 "decode": N + 2 + K_lat + K_lat + 1,  # DPS steps, D(ẑ0) per pixel stage, latent + final loops, output
                 "decode_vjp": N + K_lat + K_lat, "encode_vjp": 0}
    _, c = run(ReSample(steps=N, skip=2, travel=travel, final_opt=False, **SMALL), latent, kind)
    assert c["decode"] == N + 2 + K_lat + 1 and c["decode_vjp"] == N + K_lat


def test_counts_without_hdc_and_time_travel_truncation(latent):
    N = 9
    _, c = run(ReSample(steps=N, hdc_splits=0, latent_splits=0, final_opt=False), latent, "sr")
    assert c == {"nfe": N, "vjp": N, "encode": 0, "decode": N + 1, "decode_vjp": N, "encode_vjp": 0}
    # HDC at r = 3, 2, 1 (skip 1, last third, all latent): time travel stops at the grid's end, min(5, r) NFEs
    _, c = run(ReSample(steps=N, skip=1, hdc_splits=1, latent_splits=1, final_opt=False, **SMALL), latent, "sr")
    assert c["nfe"] == N + 3 + 2 + 1 and c["decode_vjp"] == N + 3 * 4 and c["encode"] == 0
    # travel 0 reuses z̃0(z_t): no extra NFE
    _, c = run(ReSample(steps=N, skip=2, travel=0, **SMALL), latent, "sr")
    assert c["nfe"] == N and c["vjp"] == N


def test_counts_double_under_cfg(latent):
    prior = LatentPrior(latent.config["path"], guidance_scale=2.0)
    N = 9
    _, c = run(ReSample(steps=N, skip=2, travel=2, **SMALL), prior, "sr", cond=prior.embed(["3", "7"]))
    assert c["nfe"] == 2 * (N + 3 * 2) and c["vjp"] == N


def test_without_guidance_or_hdc_it_is_ddim(latent):
    _, bound, y = measured(None, TASKS["inpaint"](), [0, 1])
    solver = ReSample(steps=5, dps_scale=0.0, hdc_splits=0, latent_splits=0, final_opt=False)
    latent.cost.reset()
    a = solver.solve(latent, bound, y, generators(range(2), "d"))
    assert latent.cost.vjp == 0 and latent.cost.decode_vjp == 0
    b = DDIM(steps=5, eta=0.0, spacing="leading").solve(latent, bound, y, generators(range(2), "d"))
    assert torch.allclose(a, b, atol=1e-6)
    guided = ReSample(steps=5, hdc_splits=0, latent_splits=0, final_opt=False).solve(latent, bound, y, generators(range(2), "d"))
    assert not torch.allclose(a, guided, atol=1e-5)


def test_tweedie_forms(latent):
    z, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    a = torch.tensor(0.3).reshape(1, 1, 1, 1)
    x0 = (z - (1 - a).sqrt() * eps) / a.sqrt()
    assert torch.equal(ReSample(tweedie="paper").x0_estimate(z, eps, x0, a), x0)
    assert torch.allclose(ReSample(tweedie="code").x0_estimate(z, eps, x0, a), (z - 0.7 * eps) / a.sqrt())


def test_resampling_matches_its_closed_form():
    """Mean and variance of N(√ᾱ_s z*, (1−ᾱ_s))·N(z', γ_t), by precision weighting, and by many draws."""
    a_t, a_s = torch.tensor(0.30, dtype=torch.float64), torch.tensor(0.36, dtype=torch.float64)
    gamma = resample_gamma(a_t, a_s, 40.0)
    assert gamma.item() == pytest.approx(40 * 0.64 / 0.70 * (1 - 0.30 / 0.36), rel=1e-12)
    z_star, z_prime = torch.tensor([1.5, -0.4], dtype=torch.float64), torch.tensor([0.2, 0.9], dtype=torch.float64)
    prec = 1 / (1 - a_s) + 1 / gamma
    want_mean = (a_s.sqrt() * z_star / (1 - a_s) + z_prime / gamma) / prec
    assert torch.allclose(stochastic_resample(z_star, z_prime, a_s, gamma), want_mean)
    n = 200_000
    xi = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    draws = stochastic_resample(z_star.expand(n, 2), z_prime.expand(n, 2), a_s, gamma, xi)
    assert torch.allclose(draws.mean(0), want_mean, atol=4 * (1 / prec).sqrt().item() / n ** 0.5)
    assert torch.allclose(draws.var(0), (1 / prec).expand(2), rtol=0.01)
    # γ → ∞: the stochastic encoding of z* alone; γ → 0: z' unchanged
    assert torch.allclose(stochastic_resample(z_star, z_prime, a_s, torch.tensor(1e12, dtype=torch.float64)), a_s.sqrt() * z_star)
    assert torch.allclose(stochastic_resample(z_star, z_prime, a_s, torch.tensor(1e-12, dtype=torch.float64)), z_prime)


def test_pixel_and_latent_optimisation_reduce_their_objectives(latent):
    for kind in ("inpaint", "sr"):
        _, bound, y = measured(None, TASKS[kind](), [0, 1])
        z0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
        s = ReSample(pixel_iters=100, latent_iters=30, latent_lr=0.05, tol=0.0)
        with torch.no_grad():
            x_init = latent.decode(z0)
        err = lambda x: (y - bound.A(x)).flatten(1).norm(dim=1)  # noqa: E731
        x_star = s.minimise(x_init, lambda v, idx: s.mse(bound, y, v, idx), s.pixel_iters, s.pixel_lr)
        assert (err(x_star) < 0.5 * err(x_init)).all(), (err(x_star), err(x_init))
        z_star = s.latent_opt(latent, bound, y, z0)
        with torch.no_grad():
            assert (err(latent.decode(z_star)) < 0.9 * err(x_init)).all()


def test_a_sample_that_met_its_tolerance_stops_changing(latent):
    """Sample 0 starts consistent (loss 0 < tol): it takes the code's one step, then stays put, and the
    other sample's trajectory is what it would be alone; costs count only the iterations each ran."""
    _, bound, y = measured(None, TASKS["sr"](), [0, 1])
    z0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = torch.cat([bound.A(latent.decode(z0[:1])), y[1:]])
    s = ReSample(latent_iters=6, latent_lr=0.05, tol=1e-8, window=0)
    one = ReSample(latent_iters=1, latent_lr=0.05, tol=1e-8, window=0)
    latent.cost.reset()
    out = s.latent_opt(latent, bound, y, z0)
    assert latent.cost.decode == 1 + 6 and latent.cost.decode_vjp == 1 + 6
    assert torch.equal(out[0], one.latent_opt(latent, bound, y, z0)[0])
    alone = s.latent_opt(latent, bound.index([1]), y[1:], z0[1:])
    assert (out[1] - alone[0]).abs().max() <= 1e-5 and not torch.allclose(out[1], z0[1])


def test_window_rule_stops_a_sample_whose_loss_rose():
    """Latent rule: stop at iteration k ≥ window when the loss is above the loss `window` iterations ago."""
    s = ReSample(weight_decay=0.0, tol=0.0)
    losses = iter([torch.tensor([3.0, 3.0]), torch.tensor([2.0, 4.0]), torch.tensor([1.0, 5.0]), torch.tensor([0.5, 6.0])])
    seen = []

    def loss_fn(v, idx):
        seen.append(idx.tolist())
        return next(losses)[idx] + 0 * v.sum(dim=(1, 2, 3))

    s.minimise(torch.zeros(2, 1, 2, 2), loss_fn, iters=4, lr=0.1, window=1)
    assert seen == [[0, 1], [0, 1], [0], [0]]  # sample 1's loss rose at iteration 1: it stops; sample 0 runs on


@pytest.mark.parametrize("kind", ["inpaint", "sr"])
def test_batch_independent(latent, kind):
    batch_independent(ReSample(steps=7, skip=2, travel=2, **SMALL), latent, kind)


def test_runs_on_text_and_class_priors(latent, tiny_text_prior):
    _, c = run(ReSample(steps=9, skip=2, travel=1, **SMALL), tiny_text_prior, "inpaint", cond=tiny_text_prior.embed(["a cat", "a dog"]))
    assert c["nfe"] == 2 * (9 + 3) and c["encode"] == 2  # CFG 3.0; HDC at r = 6, 4 (pixel), 2 (latent)
    _, c = run(ReSample(steps=9, skip=2, travel=1, tweedie="paper", **SMALL), latent, "sr", cond=latent.embed(["1", "2"]))
    assert c["nfe"] == 9 + 3  # the class prior's guidance scale is 1: one branch


def test_refusals(prior, latent):
    refuses_pixel_prior(ReSample(), prior)
    ReSample().check(latent, TASKS["inpaint"]())  # an unbound task is fine: nothing but A is used
    for bad, key in [(dict(tweedie="exact"), "tweedie"), (dict(skip=0), "skip"), (dict(latent_splits=3), "latent_splits"),
                     (dict(hdc_splits=0), "hdc_splits"), (dict(travel=-1), "travel"), (dict(gamma=0.0), "gamma"),
                     (dict(latent_lr=0.0), "latent_lr"), (dict(pixel_iters=-5), "pixel_iters"), (dict(tol=-1.0), "tol")]:
        with pytest.raises(ConfigError, match=key):
            ReSample(**bad)
