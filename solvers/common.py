"""Shared maths of the solvers: timestep grids, DDIM/DDPM steps, Tweedie conversions, per-sample norms.

Notation (VP): x_t = √ᾱ_t x0 + √(1-ᾱ_t) ε. A step goes from t to s < t; s = -1 means ᾱ_s = 1.
"""
from __future__ import annotations

import torch

from solvers.base import require_condition
from core.errors import ConfigError
from core.rng import randn

SPACINGS = ("adm", "leading", "trailing", "linspace", "quad")


def timesteps(T: int, steps: int, spacing: str = "adm") -> list[int]:
    """Descending integer timesteps (length `steps`) into a T-step schedule.

    adm      - guided-diffusion's space_timesteps(T, "S") (respace.py): a float index advanced by the stride
               (T-1)/(S-1) and rounded (Python round) at each step; includes 0 and T-1
    leading  - diffusers "leading" / LDM: i·(T//S), so the last step is 0 and T-1 is not hit
    trailing - diffusers "trailing": round(T - i·T/S) - 1, includes T-1
    linspace - round(linspace(0, T-1, S))
    quad     - DiffPIR's skip_type 'quad': q = int(√linspace(0, T², S)) with the last q lowered by 1 indexes
               the noise-level table reversed, so t = T-1-q: 999, 899, 857, …, 5, 0 at 100 of 1000 (dense near t = 0)
    """
    if not 1 <= steps <= T:
        raise ConfigError(f"steps must be in 1..{T} for this {T}-step prior, got {steps}; set solver.steps.")
    if spacing == "adm":
        stride, idx, ts = (1 if steps == 1 else (T - 1) / (steps - 1)), 0.0, []
        for _ in range(steps):  # accumulated, not i·stride: the rounding differs at 283 of the 1000 counts
            ts.append(round(idx))
            idx += stride
    elif spacing == "leading":
        ts = [i * (T // steps) for i in range(steps)]
    elif spacing == "trailing":
        ts = sorted(round(T - i * T / steps) - 1 for i in range(steps))
    elif spacing == "quad":
        q = torch.linspace(0, float(T) ** 2, steps, dtype=torch.float64).sqrt().long()
        q[-1] -= 1
        ts = (T - 1 - q).clamp(0, T - 1).tolist()
        if len(set(ts)) != len(ts):
            raise ConfigError(f"the quad grid repeats timesteps at {steps} steps of {T}; use fewer steps or another spacing.")
    elif spacing == "linspace":
        ts = torch.linspace(0, T - 1, steps, dtype=torch.float64).round().long().tolist()
    else:
        raise ConfigError(f"unknown timestep spacing {spacing!r}; set solver.spacing to one of {SPACINGS}.")
    return sorted(ts, reverse=True)


def poly_sigmas(sigma_max: float, sigma_min: float, n: int, rho: float = 7.0) -> list[float]:
    """EDM's grid (σ_max^{1/ρ} + i/(n-1)(σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ, i = 0…n-1."""
    if n == 1:
        return [sigma_max]
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [(a + i / (n - 1) * (b - a)) ** rho for i in range(n)]


def annealing_sigmas(sigma_max: float, sigma_min: float, n: int) -> list[float]:
    """DAPS's n annealing levels: the first n points of the (n+1)-point poly-7 grid (the official
    cores/scheduler.py builds num_steps+1 points and replaces the last by 0), so the last level is above σ_min."""
    return poly_sigmas(sigma_max, sigma_min, n + 1)[:n]


def annealing_step_size(lr: float, lr_min_ratio: float, n: int, k: int) -> float:
    """DAPS's Langevin step size at level k: linear decay from lr towards lr·lr_min_ratio over the n+1 points
    of the official grid (so the last of the n levels used is not at lr·lr_min_ratio)."""
    return lr * (1 + k / (n + 1) * (lr_min_ratio - 1))


def pf_ode(prior, x, t_from: int, cond, sigma_end: float, steps: int, snap_end: bool = True):
    """DAPS's x̂0: Euler steps of the probability-flow ODE in the prior's VE view, x ← x + (σ' − σ)(x − D(x; σ))/σ,
    from level σ_{t_from} down a poly-7 grid to σ_end, each σ snapped to the prior's nearest level. snap_end=False:
    the last step lands exactly on σ_end (no network call is made there). Levels are host floats: no syncs."""
    levels = prior.sigmas
    grid = [prior.sigma_to_t(s) for s in poly_sigmas(levels[t_from], sigma_end, steps + 1)]
    targets = [levels[s] for s in grid[1:]]
    if not snap_end:
        targets[-1] = sigma_end
    for t, sig_next in zip(grid[:-1], targets):
        sig = levels[t]
        x = x + (sig_next - sig) * (x - prior.denoise(x, t, cond)) / sig
    return x


def pairs(ts: list[int]):
    """(t, s) for consecutive grid points, the last pair going to s = -1 (ᾱ = 1)."""
    return list(zip(ts, ts[1:] + [-1]))


def eps_from_x0(x_t, x0, a_t):
    return (x_t - a_t.sqrt() * x0) / (1 - a_t).sqrt()


def x0_from_eps(x_t, eps, a_t):
    """First-order Tweedie: E[x0 | x_t] from the ε-prediction."""
    return (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()


def ddim_sigma(a_t, a_s, eta: float):
    """σ_{t→s} = η √((1-ᾱ_s)/(1-ᾱ_t)) √(1 - ᾱ_t/ᾱ_s); η = 1 is DDPM's posterior variance β̃."""
    return eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)).clamp_min(0).sqrt()


def ddim_step(x_t, eps, x0, a_t, a_s, eta: float = 0.0, noise=None):
    """x_s = √ᾱ_s x̂0 + √(1-ᾱ_s-σ²) ε̂ + σ ξ (Song et al. 2021, eq. 12), the one DDIM update.

    x0 None: x̂0 from (x_t, ε̂) by Tweedie. With η = 0 it is the deterministic jump DDIM_{t→s}, which also
    serves inversion (s above t) and any pair of levels, ᾱ_t = 1 included."""
    if x0 is None:
        x0 = x0_from_eps(x_t, eps, a_t)
    if eta == 0:
        return a_s.sqrt() * x0 + (1 - a_s).clamp_min(0).sqrt() * eps
    sigma = ddim_sigma(a_t, a_s, eta)
    x_s = a_s.sqrt() * x0 + (1 - a_s - sigma ** 2).clamp_min(0).sqrt() * eps
    if noise is not None:
        x_s = x_s + sigma * noise
    return x_s


VARIANCES = ("fixed_small", "fixed_large", "learned")


def ddpm_variance(a_t, a_s, variance: str = "fixed_small", raw=None):
    """The variance of an ancestral step t → s ≥ 0 of the respaced chain, β' = 1 - ᾱ_t/ᾱ_s (ADM respacing):
    fixed_small  β̃ = β'(1-ᾱ_s)/(1-ᾱ_t)
    fixed_large  β'  (ADM's fixed_large, without its first-step substitution: that step adds no noise)
    learned      ADM's learned_range: exp(f log β' + (1-f) log β̃), f = (v+1)/2, v the network's raw
                 variance channels at t (`raw`)."""
    beta = 1 - a_t / a_s
    small = beta * (1 - a_s) / (1 - a_t)
    if variance == "fixed_small":
        return small
    if variance == "fixed_large":
        return beta
    if variance == "learned":
        if raw is None:
            raise ConfigError("variance=learned needs a prior with learned-variance channels (an ADM checkpoint "
                              "with learn_sigma); set solver.variance=fixed_small.")
        f = (raw.to(a_t.dtype) + 1) / 2
        return torch.exp(f * beta.log() + (1 - f) * small.clamp_min(torch.finfo(small.dtype).tiny).log())
    raise ConfigError(f"unknown variance {variance!r}; set solver.variance to one of {VARIANCES}.")


def ddpm_step(x_t, x0, a_t, a_s, noise=None, variance: str = "fixed_small", raw=None):
    """Ancestral step from q(x_s | x_t, x̂0) of the respaced chain: the posterior mean plus √var ξ
    (`ddpm_variance`); no noise when `noise` is None (the last step)."""
    beta = 1 - a_t / a_s
    mean = (a_s.sqrt() * beta / (1 - a_t)) * x0 + ((1 - beta).sqrt() * (1 - a_s) / (1 - a_t)) * x_t
    if noise is None:
        return mean
    return mean + ddpm_variance(a_t, a_s, variance, raw).sqrt() * noise


def learned_variance_channels(prior):
    """The raw variance channels of the prior's last network call (ADM `learn_sigma`), or None."""
    return getattr(prior, "last_variance", None)


def check_variance(variance: str, prior):
    """Refuse a variance the prior cannot give, before any compute."""
    if variance not in VARIANCES:
        raise ConfigError(f"variance must be one of {VARIANCES}, not {variance!r}; set solver.variance.")
    if variance == "learned" and not getattr(prior, "config", {}).get("learned_variance", False):
        raise ConfigError(f"variance=learned needs a prior with learned-variance channels; {prior.name} has none: "
                          "set solver.variance=fixed_small.")


def _keep(v: torch.Tensor, r: torch.Tensor, keepdim: bool) -> torch.Tensor:
    return v.reshape(-1, *([1] * (r.dim() - 1))) if keepdim else v


def sample_norm(r: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    """‖r_i‖₂ for each sample i, [B] (keepdim: [B,1,…,1], to broadcast against r when normalising a
    direction). Guidance norms are never pooled over the batch."""
    return _keep(r.flatten(1).norm(dim=1), r, keepdim)


def inf_norm(r: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    """‖r_i‖_∞ for each sample i, [B] (keepdim: [B,1,…,1])."""
    return _keep(r.flatten(1).abs().amax(dim=1), r, keepdim)


def sample_noise(gens, x: torch.Tensor) -> torch.Tensor:
    """The per-step noise draw: ξ ~ N(0, I) shaped like one sample of x, each sample from its own generator."""
    return randn(gens, x.shape[1:], dtype=x.dtype, device=x.device)


def residual(prior, task, y, x0) -> torch.Tensor:
    """‖y − A(D(x̂0))‖ per sample [B] (D the prior's decoder; the identity for pixel priors)."""
    return sample_norm(y - task.A(prior.decode(x0)))


def loss_grad(loss, x: torch.Tensor, aux: bool = False):
    """∇_x Σ_i loss_i(x), detached, for a per-sample loss [B] (each sample's gradient is its own).

    aux: `loss(x)` returns (loss [B], extra), extra a tensor or a tuple of tensors computed on the way (ε̂, x̂0,
    a decoded image, the loss itself); the result is (gradient, extra), both detached. x may be a leaf an
    optimiser updates in place: the gradient is taken at a detached view of the same storage."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        value, extra = loss(x) if aux else (loss(x), None)
        (g,) = torch.autograd.grad(value.sum(), x)
    if not aux:
        return g
    return g, (tuple(e.detach() for e in extra) if isinstance(extra, tuple) else extra.detach())


def guided_prediction(prior, x, t, cond=None, loss=None, clip: bool = False):
    """(ε̂, x̂0, ∇_x Σ_i loss_i, loss) at x, all detached: the guided-prediction idiom in one place.

    `loss(x̂0)` gives a per-sample loss [B]; its gradient flows back through the network to x (1 NFE +
    1 VJP). loss None: no graph, gradient and loss are None (1 NFE). clip: x̂0 clamped to [-1, 1] and ε̂
    made consistent with it, as guided-diffusion's clip_denoised."""
    x = x.detach().requires_grad_(loss is not None)
    with torch.set_grad_enabled(loss is not None):
        eps, x0 = prior.predict(x, t, cond)
        if clip:
            x0 = x0.clamp(-1, 1)
        value = None if loss is None else loss(x0)
        grad = None if loss is None else torch.autograd.grad(value.sum(), x)[0]
    x0 = x0.detach()
    eps = eps_from_x0(x.detach(), x0, prior.abar(t, x)) if clip else eps.detach()
    return eps, x0, grad, None if value is None else value.detach()


def levels(T: int, steps: int, spacing: str = "adm") -> list[int]:
    """Ascending noise levels for inversion: level 0 is clean (t = -1, ᾱ = 1), level `steps` the noisiest."""
    return [-1] + sorted(timesteps(T, steps, spacing))



def renoise(x_s, a_s, a_t, noise):
    """A draw of q(x_t | x_s) for t > s: √(ᾱ_t/ᾱ_s) x_s + √(1-ᾱ_t/ᾱ_s) ξ (RePaint/DDNM/FreeDoM time travel)."""
    return (a_t / a_s).sqrt() * x_s + (1 - a_t / a_s).clamp_min(0).sqrt() * noise


def time_travel(steps: list, length: int = 1, repeat: int = 1) -> list:
    """The walk over grid pairs with time travel: each chunk of `length` consecutive pairs runs `repeat`
    times, going back to the chunk's start (re-noising) between runs. Items are (t, s): a reverse step
    when s < t, a re-noising t → s when s > t. length=1, repeat=1 is the plain walk."""
    if length < 1 or repeat < 1:
        raise ConfigError(f"time travel needs length >= 1 and repeat >= 1 (got {length}, {repeat}); "
                          "set solver.travel_length / solver.travel_repeat.")
    out = []
    for i in range(0, len(steps), length):
        chunk = steps[i: i + length]
        for r in range(repeat):
            out += chunk
            if r < repeat - 1:
                out.append((chunk[-1][1], chunk[0][0]))
    return out


# -- linear algebra through a task's SVD A = U diag(sv) Vᵀ -------------------------------------------
def paste_observed(task, x, y):
    """x with a masking task's observed pixels replaced by the measurement: (1 − m) ⊙ x + m ⊙ y (ΠGDM's reference
    code on x̂0 for inpainting; PSLD's saved inpainting output)."""
    return (1 - task.mask) * x + task.mask * y


def svd_coefficients(task, y):
    """(svd, sv, ŷ) with sv [B|1, d] the singular values (the docstrings' s_i) padded with zeros to the image
    dimension d and ŷ = Uᵀy [B, d] padded alike: coefficient i of Vᵀx meets sv_i and ŷ_i (sv_i = 0: x_i is
    unobserved). Per-sample scalars such as `prior.abar(t, ŷ)` broadcast against these [B, d] coefficients."""
    svd = task.cached_svd()
    if svd is None:
        raise ConfigError(f"task {task.name} has no SVD on these images; choose a task with one or another solver.")
    d = y.new_zeros(1, *task.image_shape).numel()
    sv = svd.singulars().to(y)
    uy = svd.Ut(y)[:, : sv.shape[1]]
    return svd, torch.nn.functional.pad(sv, (0, d - sv.shape[1])), torch.nn.functional.pad(uy, (0, d - sv.shape[1]))


def safe_div(a, b):
    """a / b where b ≠ 0, else 0 (unobserved coefficients)."""
    return torch.where(b != 0, a / torch.where(b != 0, b, torch.ones_like(b)), torch.zeros_like(a))


def conjugate_gradient(op, b, iters: int = 50, tol: float = 1e-6):
    """Solve op(x) = b for a symmetric positive definite op, per sample (each sample has its own α, β
    and stops contributing once its residual is below tol·‖b‖)."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = r.flatten(1).square().sum(1)
    stop = tol ** 2 * rr.clamp_min(torch.finfo(b.dtype).tiny)
    shape = (-1, *([1] * (b.dim() - 1)))
    for _ in range(iters):
        active = rr > stop
        if not active.any():  # the one host sync per iteration: the early stop is the algorithm's decision
            break
        q = op(p)
        pq = (p * q).flatten(1).sum(1)
        alpha = torch.where(active, rr / torch.where(pq > 0, pq, torch.ones_like(pq)), torch.zeros_like(rr))
        x = x + alpha.reshape(shape) * p
        r = r - alpha.reshape(shape) * q
        rr_new = r.flatten(1).square().sum(1)
        beta = torch.where(active, rr_new / rr.clamp_min(torch.finfo(b.dtype).tiny), torch.zeros_like(rr))
        p = r + beta.reshape(shape) * p
        rr = torch.where(active, rr_new, rr)
    return x


def dsg_step(mean, sigma, noise, grad, rate: float):
    """DSG (Yang et al., ICML 2024): the guided sample on the sphere of radius r = √n·σ around the
    unconditional step mean: d* = -r g/‖g‖, d_s = σξ, d = d_s + rate·(d* - d_s), x = μ + r d/‖d‖
    (n = values per sample; all norms per sample)."""
    n = mean[0].numel()
    r = (n ** 0.5) * sigma
    tiny = torch.finfo(mean.dtype).tiny
    d_star = -r * grad / sample_norm(grad, keepdim=True).clamp_min(tiny)
    d_s = sigma * noise
    d = d_s + rate * (d_star - d_s)
    return mean + r * d / sample_norm(d, keepdim=True).clamp_min(tiny)


BACKPROJECTIONS = ("pinv", "adjoint")


def backproject(task, y, how: str = "pinv"):
    """An image consistent with y: A⁺y (pseudo-inverse) or Aᵀy (adjoint). For masks they coincide; for
    average-pooling SR Aᵀ = A⁺/f², so only A⁺ gives A(x) = y."""
    return task.pinv(y) if how == "pinv" else task.At(y)


def check_backprojection(how: str, solver: str):
    if how not in BACKPROJECTIONS:
        raise ConfigError(f"{solver}: backprojection must be one of {BACKPROJECTIONS}, not {how!r}; "
                          "set solver.backprojection.")


# -- editing --------------------------------------------------------------------------------------
def edit_target(prior, task, cond):
    """The condition to regenerate with: the edit task's target prompt (with the source condition's CFG
    scale, if it carries one), or the source condition itself on any other task."""
    if "edit" not in task.provides:
        return cond
    target = require_condition(prior.embed([task.target]), prior, "editing")
    return target if cond is None else target.with_scale(cond.scale)


def inversion_top(steps: int, strength: float) -> int:
    """The highest level an edit inverts to: round(strength·steps) of the `steps` levels (strength 1: pure noise)."""
    if not 0 < strength <= 1:
        raise ConfigError(f"strength must be in (0, 1], got {strength}; set solver.strength.")
    return max(1, round(strength * steps))


inversion_level = property(lambda self: inversion_top(self.steps, self.strength),
                           doc="The level an edit inverts to, derived from the solver's steps and strength.")
