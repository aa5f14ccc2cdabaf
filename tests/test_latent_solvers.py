"""Latent-diffusion solvers on a tiny random SD-layout prior (class-embedding table, 3×16×16 images,
4×8×8 latents): shapes, finiteness, cost counts against each solver's definition, refusals, batch
independence. Random networks say nothing about quality; quality tables need a trained latent prior."""
import pytest
import torch

from models.latent import LatentPrior
from solvers.ddim import DDIM
from solvers.dps import DPS
from solvers.graikos import Graikos
from solvers.null_text import NullTextInversion
from solvers.psld import PSLD
from solvers.stsl import STSL
from core.errors import ConfigError
from tasks.inpaint import BoxInpainting
from tasks.inversion import Inversion
from core.rng import generators, randn
from tests.helpers import measured
from tests.latent_world import SHAPE, SIGMA, TASKS, batch_independent, refuses_pixel_prior, run


@pytest.fixture(scope="module")
def latent64(latent):
    """The same prior in float64: finite-difference quotients divide the network's batch-size-dependent
    float32 rounding (~1e-7) by the probe size, so batch independence of Graikos is checked in float64."""
    import copy

    p = copy.deepcopy(latent)
    p.vae.double(), p.unet.double()
    p.net_dtype = torch.float64
    return p


# -- latent DPS ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["inpaint", "sr"])
def test_latent_dps_guides_through_decoder_and_counts(latent, kind):
    steps = 3
    _, c = run(DPS(steps=steps, scale=0.5), latent, kind)
    assert c == {"nfe": steps, "vjp": steps, "encode": 0, "decode": steps + 1, "decode_vjp": steps, "encode_vjp": 0}


def test_latent_dps_does_not_clip_latents(latent):
    """On a latent prior clip_x0 has no effect (latents are not in [-1,1]); guidance is non-zero."""
    _, bound, y = measured(None, TASKS["inpaint"](), [0])
    a = DPS(steps=3, scale=0.5, clip_x0=True).solve(latent, bound, y, generators([0], "c"))
    b = DPS(steps=3, scale=0.5, clip_x0=False).solve(latent, bound, y, generators([0], "c"))
    free = DPS(steps=3, scale=0.0).solve(latent, bound, y, generators([0], "c"))
    assert torch.equal(a, b) and not torch.allclose(a, free)


# -- PSLD ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["inpaint", "sr"])
def test_psld_counts(latent, kind):
    steps = 3
    _, c = run(PSLD(steps=steps, omega=1.0, gamma=0.1), latent, kind)
    assert c == {"nfe": steps, "vjp": steps, "encode": steps, "decode": steps + 1, "decode_vjp": steps,
                 "encode_vjp": steps}
    _, c = run(PSLD(steps=steps, gamma=0.0), latent, kind)  # no gluing: no encoder at all
    assert c["encode"] == c["encode_vjp"] == 0 and c["nfe"] == c["vjp"] == c["decode_vjp"] == steps


def test_psld_without_gluing_is_latent_dps_and_gluing_matters(latent):
    _, bound, y = measured(None, TASKS["sr"](), [0, 1])
    g = generators(range(2), "p")
    psld = PSLD(steps=4, omega=0.3, gamma=0.0).solve(latent, bound, y, g)
    dps = DPS(steps=4, scale=0.3, eta=0.0, spacing="leading").solve(latent, bound, y, generators(range(2), "p"))
    assert torch.allclose(psld, dps, atol=1e-6)
    glued = PSLD(steps=4, omega=0.3, gamma=1.0).solve(latent, bound, y, generators(range(2), "p"))
    assert not torch.allclose(psld, glued, atol=1e-4)


def test_psld_backprojections_coincide_for_masks(latent):
    _, bound, y = measured(None, TASKS["inpaint"](), [0])
    a = PSLD(steps=2, backprojection="pinv").solve(latent, bound, y, generators([0], "q"))
    b = PSLD(steps=2, backprojection="adjoint").solve(latent, bound, y, generators([0], "q"))
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("kind", ["inpaint", "sr"])
def test_psld_batch_independent(latent, kind):
    batch_independent(PSLD(steps=2, gamma=0.5, eta=0.5), latent, kind)


def test_psld_refusals(prior):
    refuses_pixel_prior(PSLD(), prior)
    with pytest.raises(ConfigError, match="backprojection"):
        PSLD(backprojection="transpose")
    with pytest.raises(ConfigError, match="weights"):
        PSLD(gamma=-1)


# -- Graikos et al. (inexact Newton, finite-difference JVP) ----------------------------------------
def test_graikos_inpainting_counts_zero_unet_vjps(latent):
    steps, n_inner = 2, 3
    _, c = run(Graikos(steps=steps, n_inner=n_inner), latent, "inpaint")  # auto -> latent mask direction
    assert c == {"nfe": steps * (1 + 2 * n_inner), "vjp": 0, "encode": 1, "decode": 1, "decode_vjp": 0,
                 "encode_vjp": 0}


def test_graikos_sr_counts_decoder_vjps_only(latent):
    steps, n_inner = 2, 3
    _, c = run(Graikos(steps=steps, n_inner=n_inner, lr_start=0.1, lr_end=0.1), latent, "sr")  # decoder direction
    assert c == {"nfe": steps * (1 + 2 * n_inner), "vjp": 0, "encode": 0, "decode": steps * n_inner + 1,
                 "decode_vjp": steps * n_inner, "encode_vjp": 0}
    _, c = run(Graikos(steps=steps, n_inner=1, direction="decoder"), latent, "inpaint")
    assert c["vjp"] == 0 and c["decode_vjp"] == steps


def test_graikos_without_inner_steps_is_ancestral_ddim(latent):
    _, bound, y = measured(None, TASKS["inpaint"](), [0, 1])
    a = Graikos(steps=4, n_inner=0, variance="ddim").solve(latent, bound, y, generators(range(2), "g"))
    b = DDIM(steps=4, eta=1.0, spacing="leading").solve(latent, bound, y, generators(range(2), "g"))
    assert torch.allclose(a, b, atol=1e-6)
    guided = Graikos(steps=4, n_inner=2, variance="ddim").solve(latent, bound, y, generators(range(2), "g"))
    assert not torch.allclose(a, guided, atol=1e-4)


def test_graikos_latent_mask_keeps_only_fully_observed_patches(latent):
    _, bound, y = measured(None, TASKS["inpaint"](), [0])
    m = bound.A(torch.ones_like(y))[:, :1]
    m_z = Graikos.latent_mask(bound, y, latent)
    assert m_z.shape == (1, 4, 8, 8)
    assert torch.equal(m_z[:, :1], (torch.nn.functional.avg_pool2d(m, 2) == 1).float())
    assert 0 < m_z.mean() < 1


@pytest.mark.parametrize("kind", ["inpaint", "sr"])
def test_graikos_batch_independent(latent64, kind):
    batch_independent(Graikos(steps=2, n_inner=2), latent64, kind, dtype=torch.float64)


def test_graikos_refusals(prior, latent):
    refuses_pixel_prior(Graikos(), prior)
    with pytest.raises(ConfigError, match="mask task"):
        Graikos(direction="mask").check(latent, TASKS["sr"]().bind({}))
    # the harness checks an *unbound* task (no mask drawn yet): auto and mask must not need the mask itself
    Graikos(direction="mask").check(latent, TASKS["inpaint"]())
    assert Graikos()._direction(TASKS["inpaint"]()) == "mask" and Graikos()._direction(TASKS["sr"]()) == "decoder"
    with pytest.raises(ConfigError, match="direction"):
        Graikos(direction="newton")


# -- STSL ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["inpaint", "sr"])
def test_stsl_counts(latent, kind):
    S, K = 2, 2
    _, c = run(STSL(steps=S, inner=K), latent, kind)  # trace term on, forward-noised E(A⁺y) start, fresh ε̂
    assert c == {"nfe": S * (2 * K + 1), "vjp": S * 2 * K, "encode": 1, "decode": S * K + 1, "decode_vjp": S * K,
                 "encode_vjp": 0}
    _, c = run(STSL(steps=S, inner=K, trace_weight=0.0, ddim_eps="last", init="noise"), latent, kind)
    assert c["nfe"] == S * K and c["vjp"] == S * K and c["encode"] == 0 and c["decode_vjp"] == S * K
    _, c = run(STSL(steps=S, inner=K, init="inversion"), latent, kind)  # + S NFEs of DDIM inversion
    assert c["nfe"] == S * (2 * K + 1) + S and c["vjp"] == S * 2 * K


def test_stsl_probe_term_is_the_hutchinson_quadratic_form(latent64):
    """With a small probe scale c, εᵀ(s(z+ε) − s(z))/c² = ξᵀ(∂s/∂z)ξ, whose mean over ξ is tr ∇² log p_t."""
    _, bound, y = measured(None, TASKS["inpaint"](), [0, 1])
    bound, y = bound.to("cpu", torch.float64), y.double()
    z, t, d = torch.randn(2, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5)), 500, 4 * 8 * 8
    solver = STSL(lam=0.0, trace_weight=float(d), probe_scale=1e-6)
    got, _ = solver.loss(z, t, bound, y, latent64, generators(range(2), "h"), None)
    xi = randn(generators(range(2), "h"), (4, 8, 8), dtype=torch.float64)
    h = latent64.embed([""]).uncond.double().expand(2, -1, -1)
    sd = (1 - latent64.alphas_cumprod[t]).sqrt()
    score = lambda x: -latent64.unet(x, torch.full((2,), t), encoder_hidden_states=h).sample / sd  # noqa: E731
    zg = z.clone().requires_grad_(True)
    (jt_xi,) = torch.autograd.grad(score(zg), zg, grad_outputs=xi)  # ξᵀJξ = ξᵀ(Jᵀξ): one VJP suffices
    assert torch.allclose(got, (xi * jt_xi).flatten(1).sum(1), rtol=1e-4)


def test_stsl_batch_independent_and_first_order_limit(latent):
    batch_independent(STSL(steps=2, inner=2), latent, "sr")
    _, bound, y = measured(None, TASKS["sr"](), [0])
    a = STSL(steps=2, inner=1, trace_weight=0.0).solve(latent, bound, y, generators([0], "f"))
    b = STSL(steps=2, inner=1, trace_weight=0.5).solve(latent, bound, y, generators([0], "f"))
    assert not torch.allclose(a, b, atol=1e-5)  # the trace term moves the latent


def test_stsl_refusals(prior):
    refuses_pixel_prior(STSL(), prior)
    with pytest.raises(ConfigError, match="init"):
        STSL(init="ddpm")
    with pytest.raises(ConfigError, match="probe_scale"):
        STSL(probe_scale=0.0)


# -- null-text inversion ---------------------------------------------------------------------------
def test_null_text_counts_and_beats_plain_inversion_under_cfg(latent):
    """Optimising ∅ reduces the round-trip error that CFG causes in plain DDIM inversion (inner = 0)."""
    prior = LatentPrior(latent.config["path"], guidance_scale=3.0)
    x = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(9)) * 2 - 1
    task = Inversion(SHAPE).bind({})
    with torch.no_grad():
        target = prior.decode(prior.encode(x))
    S, K = 3, 4
    prior.cost.reset()
    plain = NullTextInversion(steps=S, inner=0).solve(prior, task, x, generators(range(2), "n"))
    assert prior.cost.nfe / 2 == S + 2 * S and prior.cost.vjp == 0
    prior.cost.reset()
    nti = NullTextInversion(steps=S, inner=K, lr=0.05, tol=0.0, tol_growth=0.0).solve(prior, task, x, generators(range(2), "n"))
    c = {k: v / 2 for k, v in prior.cost.snapshot().items()}
    assert c["nfe"] == S + S * (2 + K) and c["vjp"] == S * K and c["encode"] == 1 and c["decode"] == 1
    assert nti.shape == x.shape and torch.isfinite(nti).all()
    err = lambda a: (a - target).flatten(1).norm(dim=1)  # noqa: E731
    assert (err(nti) < err(plain)).all(), (err(nti), err(plain))


def test_null_text_refuses_pixel_priors(prior):
    refuses_pixel_prior(NullTextInversion(), prior)


@pytest.mark.parametrize("name", ["ddrm", "ddnm", "diffpir", "mcg", "pigdm", "daps", "reddiff"])
def test_pixel_solvers_refuse_a_latent_prior_before_compute(latent, name):
    """They apply A (or its SVD) to the diffusion state itself: on latents that is a different method."""
    from harness.build import instantiate
    from harness.cli import compose

    solver = instantiate("solver", compose([f"solver={name}"]).solver)
    with pytest.raises(ConfigError, match="pixel-space prior"):
        solver.check(latent, BoxInpainting(latent.image_shape, SIGMA))


TOL_SOME_STOP = 3.0  # the tiny latent world's per-sample losses are 1..10: one sample meets it, the other runs on


def _null_text_backward(prior, z0, cond, steps, inner, lr, tol, spacing="adm"):
    """Null-text inversion's reconstruction written out with `.backward()` into ∅'s `.grad` (the form the
    solver had before it took its gradient through solvers.common.loss_grad); returns (z, early stops)."""
    from models.base import Condition
    from solvers.common import ddim_step, levels

    only_c, w, ts = cond.with_scale(1.0), prior.cfg_scale(cond), levels(prior.T, steps, spacing)
    with torch.no_grad():
        pivot = [z0]
        for i in range(steps):
            pivot.append(ddim_step(pivot[-1], prior.eps(pivot[-1], ts[i + 1], only_c), None,
                                   prior.abar(ts[i], z0), prior.abar(ts[i + 1], z0)))
    z, B, stops = pivot[-1], z0.shape[0], 0
    null = cond.uncond.expand(B, *cond.uncond.shape[1:]).clone()
    for j, i in enumerate(range(steps, 0, -1)):
        t, a_t, a_p = ts[i], prior.abar(ts[i], z), prior.abar(ts[i - 1], z)
        with torch.no_grad():
            e_c = prior.eps(z, t, only_c)

        def guided(n):
            e_u = prior.eps(z, t, Condition(n, n, 1.0))  # noqa: B023
            return ddim_step(z, e_u + w * (e_c - e_u), None, a_t, a_p)  # noqa: B023

        null = null.detach().requires_grad_(True)
        opt = torch.optim.Adam([null], lr=lr * (1 - j / 100))
        done = torch.zeros(B, dtype=torch.bool)
        for _ in range(inner):
            with torch.enable_grad():
                loss = (guided(null) - pivot[i - 1]).square().flatten(1).mean(1)
            frozen = null.detach().clone()
            opt.zero_grad()
            loss.sum().backward()
            opt.step()
            with torch.no_grad():
                null.copy_(torch.where(done[:, None, None], frozen, null))
            done = done | (loss.detach() < tol)
            stops += int(done.sum())  # samples whose ∅ is frozen from here on
            if done.all():
                break
        with torch.no_grad():
            z = guided(null.detach())
    return z, stops


@pytest.mark.parametrize("tol", [0.0, TOL_SOME_STOP])
def test_null_text_takes_its_gradient_through_loss_grad_with_identical_results(latent, tol):
    """The solver's Adam loop (gradient by common.loss_grad) gives the same bits as the same loop written
    with `.backward()`; with the larger tol some samples meet it early and their ∅ is frozen (stops > 0)."""
    prior = LatentPrior(latent.config["path"], guidance_scale=3.0)
    x = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(9)) * 2 - 1
    with torch.no_grad():
        z0 = prior.encode(x)
    cond = prior.embed(["", ""])
    steps, inner, lr = 3, 4, 0.05
    want, stops = _null_text_backward(prior, z0, cond, steps, inner, lr, tol)
    got = NullTextInversion(steps=steps, inner=inner, lr=lr, tol=tol, tol_growth=0.0).latent(prior, z0, cond)
    assert torch.equal(got, want)
    assert (stops > 0) == (tol > 0), stops
