"""P2L (prompt-tuning latent diffusion) on tiny random SD-layout priors: cost counts against the algorithm
(prompt VJPs w.r.t. the embedding included), the prompt update lowering the measurement loss, the latent-DPS
limit, the proximal projection's normal equations, batch independence, text and class conditions, refusals."""
import pytest
import torch

from solvers.dps import DPS
from solvers.p2l import P2L
from core.errors import ConfigError
from core.rng import generators, randn
from tests.helpers import measured
from tests.latent_world import TASKS, batch_independent, refuses_pixel_prior, run

SHAPE = (3, 16, 16)


# -- costs -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["inpaint", "sr"])
def test_counts_every_step(latent, kind):
    """S steps, K prompt steps each, projection on step i = 1 of 3 (proj_every = 2): per step K + 1 NFEs,
    K UNet VJPs w.r.t. c + 1 w.r.t. z_t, K + 1 decodes and decoder VJPs; 1 encode; 1 final decode."""
    S, K = 3, 2
    _, c = run(P2L(steps=S, prompt_steps=K, prompt_lr=1e-2, proj_every=2), latent, kind)
    assert c == {"nfe": S * (K + 1), "vjp": S * (K + 1), "encode": 1, "decode": S * (K + 1) + 1,
                 "decode_vjp": S * (K + 1), "encode_vjp": 0}


def test_counts_sparse_prompt_updates_and_k1_is_two_nfe_per_step(latent):
    S, K = 5, 3
    _, c = run(P2L(steps=S, prompt_steps=K, prompt_every=2, proj_every=0), latent, "sr")  # updates at i = 0, 2, 4
    assert c == {"nfe": S + 3 * K, "vjp": S + 3 * K, "encode": 0, "decode": S + 3 * K + 1,
                 "decode_vjp": S + 3 * K, "encode_vjp": 0}
    _, c = run(P2L(steps=S, prompt_steps=1, proj_every=5), latent, "inpaint")  # the paper's setting, no CFG
    assert c["nfe"] == 2 * S and c["vjp"] == 2 * S and c["encode"] == 1


def test_prompt_vjps_are_counted_wrt_the_embedding(latent):
    """scale = 0 (no latent guidance): every UNet and decoder VJP is the prompt's, K per step."""
    S, K = 2, 3
    _, c = run(P2L(steps=S, prompt_steps=K, scale=0.0, proj_every=0), latent, "inpaint")
    assert c == {"nfe": S * (K + 1), "vjp": S * K, "encode": 0, "decode": S * K + 1, "decode_vjp": S * K,
                 "encode_vjp": 0}
    _, c = run(P2L(steps=S, prompt_steps=0, scale=0.0, proj_every=1), latent, "inpaint")  # projection only
    assert c == {"nfe": S, "vjp": 0, "encode": S, "decode": S + 1, "decode_vjp": 0, "encode_vjp": 0}


def test_cfg_doubles_nfes_not_vjps(tiny_text_prior):
    S, K = 2, 1
    cond = tiny_text_prior.embed(["a cat", "a dog"])
    _, c = run(P2L(steps=S, prompt_steps=K, proj_every=0), tiny_text_prior, "sr", cond=cond)  # model scale 3.0
    assert c["nfe"] == 2 * S * (K + 1) and c["vjp"] == S * (K + 1)
    _, c = run(P2L(steps=S, prompt_steps=K, proj_every=0), tiny_text_prior, "sr", cond=cond.with_scale(1.0))
    assert c["nfe"] == S * (K + 1)


# -- the prompt update -----------------------------------------------------------------------------
@pytest.mark.parametrize("cond_of", [lambda p: None, lambda p: p.embed(["3", "7"])])
def test_prompt_update_lowers_the_measurement_loss(latent, cond_of):
    _, bound, y = measured(None, TASKS["sr"](), [0, 1])
    z = randn(generators(range(2), "z"), latent.state_shape)
    solver = P2L(prompt_steps=8, prompt_lr=5e-2)
    base, c = solver.initial_prompt(latent, cond_of(latent), 2)
    c0 = c.clone()
    with torch.no_grad():
        before = solver.prompt_loss(latent, bound, y, z, 600, base, c)
    c.requires_grad_(True)
    solver.tune_prompt(latent, bound, y, z, 600, base, c, torch.optim.Adam([c], lr=solver.prompt_lr))
    with torch.no_grad():
        after = solver.prompt_loss(latent, bound, y, z, 600, base, c)
    assert (after < before).all(), (before, after)
    assert not torch.equal(c.detach(), c0) and torch.equal(base.uncond, latent.embed([""]).uncond)


def test_one_embedding_row_per_sample(latent):
    """A condition with one row per image is spread over its samples; each sample then owns a copy."""
    base, c = P2L().initial_prompt(latent, latent.embed(["3", "7"]), 4)
    assert c.shape[0] == 4 and torch.equal(c[0], c[1]) and torch.equal(c[2], c[3]) and not torch.equal(c[1], c[2])
    _, c = P2L().initial_prompt(latent, None, 3)  # unconditional: the null-text embedding
    assert torch.equal(c, latent.embed([""]).cond.expand(3, -1, -1))
    with pytest.raises(ConfigError, match="conditions"):
        P2L().initial_prompt(latent, latent.embed(["1", "2"]), 3)


# -- limits and identities -------------------------------------------------------------------------
@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_without_prompt_steps_or_projection_it_is_latent_dps(latent, eta):
    _, bound, y = measured(None, TASKS["sr"](), [0, 1])
    p2l = P2L(steps=4, prompt_steps=0, proj_every=0, scale=0.3, eta=eta).solve(latent, bound, y, generators(range(2), "d"))
    dps = DPS(steps=4, scale=0.3, eta=eta, spacing="leading").solve(latent, bound, y, generators(range(2), "d"))
    assert torch.allclose(p2l, dps, atol=1e-6)
    tuned = P2L(steps=4, prompt_steps=1, prompt_lr=5e-2, proj_every=0, scale=0.3, eta=eta).solve(
        latent, bound, y, generators(range(2), "d"))
    assert not torch.allclose(p2l, tuned, atol=1e-4)  # the tuned prompt moves the result


def test_projection_solves_the_normal_equations(latent):
    """x* = argmin ‖y − Ax‖² + λ‖x − x̂‖²: (AᵀA + λI)x* = Aᵀy + λx̂ (SR, by CG), closed form for a mask."""
    x_hat = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(4)) * 2 - 1
    _, bound, y = measured(None, TASKS["sr"](), [0, 1])
    solver = P2L(lam=0.3, cg_iters=50)
    x = solver.prox(bound, y, x_hat)
    lhs, rhs = bound.At(bound.A(x)) + 0.3 * x, bound.At(y) + 0.3 * x_hat
    assert (lhs - rhs).abs().max() < 1e-5
    _, bound, y = measured(None, TASKS["inpaint"](), [0, 1])
    m = bound.A(torch.ones_like(y))
    x = P2L(lam=0.3, cg_iters=3).prox(bound, y, x_hat)  # the operator is diagonal: CG converges at once
    assert torch.allclose(x, (m * y + 0.3 * x_hat) / (m + 0.3), atol=1e-6)
    assert not torch.allclose(m * x, m * x_hat)


def test_projection_changes_the_result(latent):
    _, bound, y = measured(None, TASKS["inpaint"](), [0])
    a = P2L(steps=3, prompt_steps=0, proj_every=0).solve(latent, bound, y, generators([0], "j"))
    b = P2L(steps=3, prompt_steps=0, proj_every=1).solve(latent, bound, y, generators([0], "j"))
    assert not torch.allclose(a, b, atol=1e-4)


# -- batch independence, conditions ----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["inpaint", "sr"])
def test_batch_independent(latent, kind):
    batch_independent(P2L(steps=2, prompt_steps=2, prompt_lr=5e-2, proj_every=1, eta=0.5), latent, kind)


def test_runs_with_text_and_class_conditions(latent, tiny_text_prior):
    x, _ = run(P2L(steps=2, prompt_steps=1, prompt_lr=1e-2, proj_every=1), tiny_text_prior, "inpaint",
               cond=tiny_text_prior.embed(["a red car", "a cat"]))
    x0, _ = run(P2L(steps=2, prompt_steps=1, prompt_lr=1e-2, proj_every=1), tiny_text_prior, "inpaint")
    assert not torch.allclose(x, x0, atol=1e-4)
    x, c = run(P2L(steps=2, prompt_steps=1, proj_every=2), latent, "sr", cond=latent.embed(["3", "7"]))
    assert c["nfe"] == 4 and c["encode"] == 1


def test_without_projection_a_nonlinear_task_is_enough(latent):
    from tasks.nonlinear import HDR

    _, bound, y = measured(None, HDR(SHAPE, {"sigma": 0.05}), [0, 1])
    solver = P2L(steps=2, prompt_steps=1, proj_every=0)
    solver.check(latent, bound)
    x = solver.solve(latent, bound, y, generators(range(2), "h"))
    assert x.shape == (2, *SHAPE) and torch.isfinite(x).all()
    with pytest.raises(ConfigError, match="linear task"):
        P2L(proj_every=10).check(latent, bound)


def test_config_and_refusals(prior, latent):
    from harness.build import instantiate
    from harness.cli import compose

    solver = instantiate("solver", compose(["solver=p2l"]).solver)
    assert isinstance(solver, P2L) and solver.steps == 1000 and solver.prompt_steps == 1
    refuses_pixel_prior(P2L(), prior)
    assert P2L().needs == {"latent", "linear"} and P2L(proj_every=0).needs == {"latent"}
    for bad, key in ((dict(prompt_steps=-1), "prompt_steps"), (dict(prompt_lr=0.0), "prompt_lr"),
                     (dict(prompt_every=0), "prompt_every"), (dict(lam=0.0), "lam"), (dict(proj_every=-1), "proj_every"),
                     (dict(cg_iters=0), "cg_iters"), (dict(scale=-1.0), "scale"), (dict(eta=1.5), "eta")):
        with pytest.raises(ConfigError, match=key):
            P2L(**bad)
