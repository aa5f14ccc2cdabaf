"""Official behaviours pinned by writing the official value out independently of our implementation."""
from __future__ import annotations

import math

import pytest
import torch

from solvers.common import timesteps


def _space_timesteps(num_timesteps: int, count: int) -> set:
    """guided-diffusion respace.space_timesteps(num_timesteps, str(count)), one section, written out."""
    frac_stride = 1 if count <= 1 else (num_timesteps - 1) / (count - 1)
    cur, out = 0.0, []
    for _ in range(count):
        out.append(round(cur))
        cur += frac_stride
    return set(out)


def test_adm_spacing_equals_space_timesteps_at_every_step_count():
    for n in range(1, 1001):
        ts = timesteps(1000, n, "adm")
        assert ts == sorted(_space_timesteps(1000, n), reverse=True), n
    assert 499 in timesteps(1000, 21, "adm") and 500 not in timesteps(1000, 21, "adm")


def test_diffpir_quad_grid_is_the_official_order():
    # main_ddpir_sisr.py: seq = int(sqrt(linspace(0, T², N))), seq[-1] -= 1; t_i = index of sigmas[seq[i]],
    # sigmas the noise-level table reversed, so t_i = T-1-seq[i].
    T, N = 1000, 100
    seq = [int(math.sqrt(i * T * T / (N - 1))) for i in range(N)]
    seq[-1] -= 1
    official = [T - 1 - q for q in seq]
    ts = timesteps(T, N, "quad")
    assert ts == official
    assert ts[:3] == [999, 899, 857] and ts[-2:] == [5, 0]
    assert ts[-1] - ts[-2] > -10 and ts[0] - ts[1] == 100  # dense near t = 0


def test_daps_annealing_grid_is_the_first_n_of_n_plus_1_points():
    from solvers.common import annealing_sigmas
    from solvers.daps import DAPS
    from solvers.latent_daps import LatentDAPS
    # cores/scheduler.py EDMScheduler: num_steps+1 points (σ_max^{1/7} + r(σ_min^{1/7} − σ_max^{1/7}))^7,
    # r = linspace(0, 1, N+1); the last point is replaced by 0, so the N levels used are the first N.
    N, smax, smin = 200, 100.0, 0.1
    official = [(smax ** (1 / 7) + (i / N) * (smin ** (1 / 7) - smax ** (1 / 7))) ** 7 for i in range(N + 1)][:N]
    assert annealing_sigmas(smax, smin, N) == pytest.approx(official, rel=1e-12)
    assert annealing_sigmas(smax, smin, N)[-1] == pytest.approx(0.1060, abs=5e-4)  # not σ_min = 0.1
    # lr decay over N+1 points (sampler.py: lr * (1 + k/num_steps·(ratio−1)) with num_steps = N+1)
    for cls in (DAPS, LatentDAPS):
        d = cls(annealing_steps=4, lr=1.0, lr_min_ratio=0.5)
        assert [d.step_size(k) for k in range(4)] == pytest.approx([1 - 0.5 * k / 5 for k in range(4)])


# -- solvers on the exact digits world (the `prior` fixture) ------------------------------------------
def _spy(monkeypatch, prior, log):
    """Record (t, x requires grad, cond, x) of every prior.predict call."""
    orig = prior.predict

    def predict(x, t, cond=None):
        log.append((int(torch.as_tensor(t).reshape(-1)[0]), x.requires_grad, cond, x.detach().clone()))
        return orig(x, t, cond)
    monkeypatch.setattr(prior, "predict", predict)


def _measured(prior, task, ids=(7,)):
    from core.rng import generators
    x = prior.sample_prior(generators(list(ids), "truth"))
    bound = task.bind(task.draw(list(ids), 0))
    return bound, bound.measure(x, generators(list(ids), "noise"))


@pytest.mark.parametrize("steps,k", [(10, 3), (12, 4), (7, 2)])
def test_dsg_guided_steps_count_down_so_the_last_is_guided(prior, monkeypatch, steps, k):
    from solvers.dps import DPS
    from tasks.inpaint import BoxInpainting
    from core.rng import generators
    task, y = _measured(prior, BoxInpainting((1, 16, 16), {"sigma": 0.05}, box=8, margin=1))
    log = []
    _spy(monkeypatch, prior, log)
    DPS(steps=steps, dsg={"enabled": True, "rate": 0.2, "interval": k}).solve(prior, task, y, generators([7], "s"))
    # official (condition_methods.py DSG.conditioning): guided iff idx % interval == 0, idx = N-1, …, 0
    official = [idx % k == 0 for idx in range(steps - 1, -1, -1)]
    assert [g for _, g, _, _ in log] == official and official[-1]


def test_ddrm_noiseless_last_step_falls_through_to_the_free_case(prior, monkeypatch):
    """σ_y = 0: at σ_next = 0 neither s·σ_next > σ_y nor s·σ_next < σ_y holds, so the official code
    (functions/denoising.py) returns x̂0 on every coefficient, observed ones included (not ȳ)."""
    from solvers.ddrm import DDRM
    from tasks.inpaint import BoxInpainting
    from core.rng import generators
    task, y = _measured(prior, BoxInpainting((1, 16, 16), {"sigma": 0.0}, box=8, margin=1))
    assert task.sigma_y == 0
    const = torch.full_like(y, 0.25)
    monkeypatch.setattr(prior, "predict", lambda x, t, cond=None: (torch.zeros_like(x), const.expand_as(x)))
    out = DDRM(steps=5, eta=0.85).solve(prior, task, y, generators([7], "s"))
    assert torch.allclose(out, const.to(out.dtype), atol=1e-6)  # x̂0 everywhere; old code gave y where observed


def test_reddiff_returns_mu_before_the_last_adam_step(prior, monkeypatch):
    from solvers.reddiff import REDDiff
    from tasks.sr import AvgPoolSR
    from core.rng import generators
    task, y = _measured(prior, AvgPoolSR((1, 16, 16), {"sigma": 0.05}, factor=4))
    seen, A = [], task.A
    monkeypatch.setattr(task, "A", lambda x: (seen.append(x.detach().clone()), A(x))[1])
    out = REDDiff(steps=6).solve(prior, task, y, generators([7], "s"))
    # algos/reddiff.py returns x0_pred = mu (+ σ_x0·0) as the last loss saw it, before optimizer.step()
    assert torch.equal(out, prior.decode(seen[-1]))
    assert not torch.equal(seen[-1], seen[-2])


def test_pigdm_starts_from_the_noised_pseudo_inverse_and_replaces_observed_pixels(prior, monkeypatch):
    from solvers.pigdm import PiGDM
    from tasks.inpaint import BoxInpainting
    from core.rng import generators
    task, y = _measured(prior, BoxInpainting((1, 16, 16), {"sigma": 0.05}, box=8, margin=1))
    noise_run, pinv_run = [], []
    _spy(monkeypatch, prior, noise_run)
    PiGDM(steps=5, init="noise", replace_observed=False).solve(prior, task, y, generators([7], "s"))
    monkeypatch.undo()
    _spy(monkeypatch, prior, pinv_run)
    out = PiGDM(steps=5).solve(prior, task, y, generators([7], "s"))
    t0, xi = noise_run[0][0], noise_run[0][3]
    a = prior.alphas_cumprod[t0].to(xi.dtype)
    # RED-diff algos/pgdm.py initialize: √ᾱ_T H⁺y + √(1-ᾱ_T) ξ
    assert torch.allclose(pinv_run[0][3], a.sqrt() * (y * task.mask) + (1 - a).sqrt() * xi, atol=1e-6)
    m = task.mask.expand_as(out).bool()
    # 'in2': x̂0 = x̂0 (1-m) + y m at every step, so the last step (ᾱ_s = 1) returns y on observed pixels
    assert torch.allclose(out[m], y[m].to(out.dtype), atol=1e-5)


def test_graikos_is_unconditional_by_default(monkeypatch):
    from models.gmm import digits_gmm_latent
    from solvers.graikos import Graikos
    from tasks.inpaint import BoxInpainting
    from core.rng import generators
    latent = digits_gmm_latent()
    task, y = _measured(latent, BoxInpainting((1, 16, 16), {"sigma": 0.05}, box=8, margin=1))
    cond = latent.embed(["3"])
    for conditional, expect_none in ((False, True), (True, False)):
        log = []
        _spy(monkeypatch, latent, log)
        Graikos(steps=2, n_inner=1, conditional=conditional).solve(latent, task, y, generators([7], "s"), cond)
        monkeypatch.undo()
        assert all((c is None) == expect_none for _, _, c, _ in log)


def test_learned_variance_is_adm_learned_range_on_the_respaced_chain():
    """guided-diffusion gaussian_diffusion.py p_mean_variance, LEARNED_RANGE, on SpacedDiffusion's betas:
    min_log = posterior_log_variance_clipped, max_log = log(betas), frac = (v+1)/2."""
    import numpy as np
    from models.base import linear_alphas_cumprod
    from solvers.common import ddpm_variance
    abar = linear_alphas_cumprod(1000).numpy()
    use = sorted(_space_timesteps(1000, 25))
    betas, last = [], 1.0
    for i in use:  # SpacedDiffusion.__init__
        betas.append(1 - abar[i] / last)
        last = abar[i]
    betas = np.array(betas)
    ac = np.cumprod(1 - betas)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1 - ac_prev) / (1 - ac)
    min_log = np.log(np.append(post_var[1], post_var[1:]))
    max_log = np.log(betas)
    g = torch.Generator().manual_seed(0)
    v = torch.rand(4, generator=g, dtype=torch.float64) * 2 - 1
    for k in range(1, len(use)):  # respaced index k: t = use[k] → s = use[k-1] (k = 0 adds no noise)
        frac = (v.numpy() + 1) / 2
        official = np.exp(frac * max_log[k] + (1 - frac) * min_log[k])
        a_t, a_s = torch.tensor(abar[use[k]]), torch.tensor(abar[use[k - 1]])
        ours = ddpm_variance(a_t, a_s, "learned", v)
        assert np.allclose(ours.numpy(), official, rtol=1e-10)
        assert torch.allclose(ddpm_variance(a_t, a_s, "fixed_small"), torch.tensor(post_var[k]), rtol=1e-10)
        assert torch.allclose(ddpm_variance(a_t, a_s, "fixed_large"), torch.tensor(betas[k]), rtol=1e-10)


def test_learned_variance_is_read_from_the_prior_and_refused_without_it(prior, tmp_path):
    from models.diffusers_pixel import DiffusersPixelPrior
    from solvers.ddpm import DDPM
    from solvers.dps import DPS
    from core.errors import ConfigError
    from tasks.inpaint import BoxInpainting
    from core.rng import generators
    from tests.test_net_models import save_pixel, tiny_unet
    task = BoxInpainting((1, 16, 16), {"sigma": 0.05}, box=8, margin=1)
    with pytest.raises(ConfigError, match="learned-variance"):
        DPS(variance="learned").check(prior, task)
    with pytest.raises(ConfigError, match="eta = 1"):
        DPS(variance="learned", eta=0.0)
    net = DiffusersPixelPrior(save_pixel(tmp_path, tiny_unet(channels=1, learned_variance=True)), dtype="float32")
    bound = task.bind(task.draw([0], 0))
    y = bound.measure(torch.zeros(1, 1, 16, 16), generators([0], "noise"))
    DPS(variance="learned").check(net, bound)
    outs = {v: DPS(steps=4, variance=v).solve(net, bound, y, generators([0], "s")) for v in
            ("fixed_small", "fixed_large", "learned")}
    assert not torch.equal(outs["learned"], outs["fixed_small"]) and not torch.equal(outs["learned"], outs["fixed_large"])
    a = DDPM(steps=4, variance="learned").solve(net, bound, y, generators([0], "s"))
    assert torch.isfinite(a).all()


@pytest.mark.parametrize("size,box,margin", [(16, 8, 1), (64, 32, 4), (256, 128, 16), (512, 256, 32)])
def test_box_defaults_scale_with_the_image_and_presets_keep_pixels(size, box, margin):
    from harness.build import instantiate
    from harness.cli import compose
    from tasks.inpaint import BoxInpainting, FreeFormInpainting
    t = instantiate("task", compose(["task=inpaint_box"]).task, image_shape=(3, size, size))
    assert (t.box, t.margin) == (box, margin) and t.describe()["hole_fraction"] == 0.25
    f = instantiate("task", compose(["task=inpaint_freeform"]).task, image_shape=(3, size, size))
    assert (f.max_width, f.max_length) == (round(0.1875 * size), round(0.375 * size))
    p = instantiate("task", compose(["+experiment=dps_ffhq_inpaint_box"]).task, image_shape=(3, 256, 256))
    assert (p.box, p.margin) == (128, 16)  # DPS's published absolute values
    with pytest.raises(Exception, match="whole number of pixels"):
        BoxInpainting((1, 16, 16), box=2.5)
