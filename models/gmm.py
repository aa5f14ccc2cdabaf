"""The exact world: a Gaussian-mixture data distribution whose scores and posteriors are closed-form.

p0(x) = Σ_k w_k N(x; μ_k, Σ_k) with Σ_k = U_k diag(λ_k) U_kᵀ + δ I (U_k orthonormal, d×r).
Under the VP forward process x_t = √ᾱ x0 + √(1-ᾱ) ε the marginal is again a mixture with
covariances C_k = ᾱ Σ_k + (1-ᾱ) I = U_k diag(ᾱλ_k) U_kᵀ + c I, c = ᾱδ + 1 - ᾱ, whose inverse and
log-determinant follow from Woodbury in O(d r). Everything is computed in float64.
"""
from __future__ import annotations

import copy
import functools
import math

import torch

from models.base import Condition, Prior, counted, linear_alphas_cumprod, prompt_list
from core.digits import load_digits
from core.errors import ConfigError
from core.rng import randn


class GaussianMixture(torch.nn.Module):
    """The mixture's tensors are module buffers, so `prior.to(device)` moves them with the prior (a submodule).
    They stay float64 whatever dtype a conversion asks for (`_apply`): the closed forms are computed in
    float64 by design and `ExactPrior.network` casts its ε to the caller's dtype."""

    def __init__(self, weights, means, bases, lams, delta: float):
        super().__init__()
        self.register_buffer("weights", weights.double() / weights.sum(), persistent=False)  # [K]
        self.register_buffer("means", means.double(), persistent=False)  # [K, d]
        self.register_buffer("bases", bases.double(), persistent=False)  # [K, d, r]
        self.register_buffer("lams", lams.double(), persistent=False)  # [K, r]
        self.delta = float(delta)

    def _apply(self, fn, recurse=True):
        """Follow a conversion's device, never its dtype: `fn` is probed on an empty float64 tensor for
        where it sends tensors, and every buffer moves there as float64 (no cast, so nothing is lost)."""
        device = fn(torch.empty(0, dtype=torch.float64, device=self.means.device)).device
        return super()._apply(lambda t: t.to(device), recurse)

    def host(self) -> "GaussianMixture":
        """This mixture with its tensors on the CPU (itself when they are there): for the exact posterior,
        which is computed on the host in float64 from the host-side measurement."""
        return self if self.means.device.type == "cpu" else copy.deepcopy(self).cpu()

    @property
    def d(self) -> int:
        return self.means.shape[1]

    def covariance(self, k: int) -> torch.Tensor:
        U, lam = self.bases[k], self.lams[k]
        return (U * lam) @ U.T + self.delta * torch.eye(self.d, dtype=torch.float64, device=U.device)

    def _terms(self, x: torch.Tensor, abar: torch.Tensor):
        """Per component: log N(x; √ᾱ μ_k, C_k) [B,K] and C_k⁻¹(x - √ᾱ μ_k) [B,K,d]; abar is [B]."""
        a = abar.reshape(-1, 1, 1)
        diff = x[:, None, :] - a.sqrt() * self.means[None]  # [B,K,d]
        c = a * self.delta + 1 - a  # [B,1,1]
        al = a * self.lams[None]  # [B,K,r]
        shrink = al / (al + c)
        proj = torch.einsum("bkd,kdr->bkr", diff, self.bases)
        cinv_diff = (diff - torch.einsum("bkr,kdr->bkd", shrink * proj, self.bases)) / c
        quad = (diff * cinv_diff).sum(-1)
        logdet = self.d * c[..., 0].log() + torch.log1p(al / c).sum(-1)
        return -0.5 * (quad + logdet + self.d * math.log(2 * math.pi)), cinv_diff

    def log_prob_t(self, x, abar):
        logn, _ = self._terms(x, abar)
        return torch.logsumexp(logn + self.weights.log(), dim=1)

    def score_t(self, x, abar, logits=None):
        """∇ log p_t(x); `logits` [B,K] (unnormalised log-weights, per sample) replace the mixture weights."""
        logn, cinv_diff = self._terms(x, abar)
        logw = self.weights.log() if logits is None else logits.log_softmax(-1)
        resp = torch.softmax(logn + logw, dim=1)
        return -(resp[..., None] * cinv_diff).sum(1)

    def tweedie_t(self, x, abar):
        """E[x0 | x_t] = (x_t + (1-ᾱ) ∇log p_t) / √ᾱ."""
        a = abar.reshape(-1, 1)
        return (x + (1 - a) * self.score_t(x, abar)) / a.sqrt()

    def rotated(self, Q: torch.Tensor) -> "GaussianMixture":
        """The law of Q x for x from this mixture (Q orthogonal d×d): means Qμ_k, bases Q U_k."""
        return GaussianMixture(self.weights, self.means @ Q.T, Q @ self.bases, self.lams, self.delta)

    def sample(self, gens) -> torch.Tensor:
        """One sample per generator, [B, d]; each uses its own generator only."""
        out = []
        r = self.lams.shape[1]
        for g in gens:
            k = int(torch.multinomial(self.weights, 1, generator=g).item())
            z = randn([g], (r + self.d,), dtype=torch.float64)[0]
            out.append(self.means[k] + self.bases[k] @ (self.lams[k].sqrt() * z[:r]) + math.sqrt(self.delta) * z[r:])
        return torch.stack(out)


class GaussianMixturePosterior:
    """p(x0 | y) for a linear-Gaussian measurement: a mixture of full-covariance Gaussians."""

    def __init__(self, log_weights, means, covs):
        self.weights = torch.softmax(log_weights, 0)
        self.means, self.covs = means, covs
        evals, evecs = torch.linalg.eigh(covs)
        self.roots = evecs * evals.clamp_min(0).sqrt()[:, None, :]

    @property
    def mean(self) -> torch.Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    @property
    def covariance(self) -> torch.Tensor:
        m = self.mean
        dm = self.means - m
        return (self.weights[:, None, None] * (self.covs + dm[:, :, None] * dm[:, None, :])).sum(0)

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=gen)
        z = torch.randn(n, self.means.shape[1], generator=gen, dtype=torch.float64)
        out = torch.empty_like(z)
        for c in k.unique().tolist():  # one matmul per component, not an [n, d, d] gather
            sel = k == c
            out[sel] = self.means[c] + z[sel] @ self.roots[c].T
        return out


class ExactPrior(Prior):
    """A Prior whose ε̂ is the exact ε-prediction of a Gaussian mixture (no network: closed form)."""

    exact = True

    def __init__(self, mixture: GaussianMixture, image_shape, alphas_cumprod=None, name="gmm"):
        super().__init__(alphas_cumprod if alphas_cumprod is not None else linear_alphas_cumprod(),
                         image_shape, name=name)
        self.mixture = mixture
        if math.prod(image_shape) != mixture.d:
            raise ConfigError(f"a {mixture.d}-dimensional mixture cannot model {image_shape} images.")

    def network(self, x_t, t, cond=None):
        a = self.alphas_cumprod[t.to(self.alphas_cumprod.device)].to(x_t.device)
        score = self.mixture.score_t(x_t.flatten(1).double(), a)
        eps = -(1 - a)[:, None].sqrt() * score
        return eps.to(x_t.dtype).reshape(x_t.shape)

    def sample_prior(self, gens) -> torch.Tensor:
        return self.mixture.sample(gens).float().reshape(-1, *self.image_shape)

    def posterior(self, task, y: torch.Tensor) -> GaussianMixturePosterior:
        """Exact p(x0 | y) for `task` bound to one image and y of batch 1 (Gaussian noise, any linear A)."""
        if not (task.linear and task.noise.gaussian):
            raise ConfigError(f"the exact posterior needs a linear task with Gaussian noise; {task.name} "
                              f"with {task.noise.name} noise is not one.")
        A = task.matrix(torch.float64)
        yv = y.reshape(-1).double().cpu()
        keep = A.abs().sum(1) > 0  # rows that see nothing of x carry no information about it
        A, yv = A[keep], yv[keep]
        mix, s2 = self.mixture.host(), task.sigma_y ** 2
        logw, means, covs = [], [], []
        eye = torch.eye(A.shape[0], dtype=torch.float64)
        for k in range(len(mix.weights)):
            S = mix.covariance(k)
            SAt = S @ A.T
            G = A @ SAt + s2 * eye
            L = torch.linalg.cholesky(G)
            r = yv - A @ mix.means[k]
            sol = torch.cholesky_solve(r[:, None], L)[:, 0]
            gain_t = torch.cholesky_solve(SAt.T, L)  # G⁻¹ A Σ
            means.append(mix.means[k] + SAt @ sol)
            cov = S - SAt @ gain_t
            covs.append(0.5 * (cov + cov.T))
            logn = -0.5 * (r @ sol + 2 * L.diagonal().log().sum() + A.shape[0] * math.log(2 * math.pi))
            logw.append(mix.weights[k].log() + logn)
        return GaussianMixturePosterior(torch.stack(logw), torch.stack(means), torch.stack(covs))


class ExactLatentPrior(ExactPrior):
    """The exact world seen by a latent solver: an orthogonal "autoencoder" z = E(x) = Q x, D(z) = Qᵀ z
    (Q a seeded random rotation, or the identity), and a "UNet" that is the exact ε of the law of z (the
    mixture rotated by Q). The posterior over images is the pixel world's, so latent solvers are scored
    against the exact posterior. Encoder/decoder calls and their backward passes are counted as a VAE's.

    Prompts are mixture logits, so prompt-tuning solvers (P2L) have an embedding to tune: class "k" puts
    the weight on component k, "" (null) is the mixture's own weights; `embed` gives [n, 1, K] rows and a
    condition is differentiable. CFG (scale ≠ 1) combines the ε of the two logit rows (2 NFE per sample).
    """

    is_latent = True

    def __init__(self, mixture: GaussianMixture, image_shape, alphas_cumprod=None, name="gmm_latent",
                 rotate: bool = True, guidance_scale: float = 1.0):
        super().__init__(mixture, image_shape, alphas_cumprod, name)
        d = mixture.d
        if rotate:
            q, r = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
            q = q * r.diagonal().sign()  # the Haar-distributed orthogonal factor
        else:
            q = torch.eye(d, dtype=torch.float64)
        self.register_buffer("Q", q, persistent=False)
        self.latent = mixture.rotated(q)
        self.guidance_scale = float(guidance_scale)

    def _logits(self, prompts) -> torch.Tensor:
        K = len(self.mixture.weights)
        rows = []
        for p in prompts:
            if p == "":
                rows.append(self.mixture.weights.log())
            elif str(p).isdigit() and int(p) < K:
                row = torch.full((K,), -30.0, dtype=torch.float64, device=self.mixture.weights.device)
                rows.append(row.index_fill(0, torch.tensor([int(p)], device=row.device), 0.0))
            else:
                raise ConfigError(f"class prompt {p!r} is not one of the {K} components '0'..'{K - 1}' (or '' for none).")
        return torch.stack(rows)[:, None, :]

    def embed(self, prompts: list) -> Condition:
        return Condition(self._logits(prompt_list(prompts)), self._logits([""]))

    def _eps(self, z, t, logits):
        a = self.alphas_cumprod[t.to(self.alphas_cumprod.device)].to(z.device)
        if logits is not None:
            logits = logits.to(device=z.device, dtype=torch.float64)[:, 0]
            logits = logits.expand(z.shape[0], -1) if logits.shape[0] == 1 else logits
        score = self.latent.score_t(z.flatten(1).double(), a, logits)
        return (-(1 - a)[:, None].sqrt() * score).to(z.dtype).reshape(z.shape)

    def network(self, z, t, cond=None):
        if cond is None:
            return self._eps(z, t, None)
        if not self._guided(cond):
            return self._eps(z, t, cond.cond)
        uncond, c = self._eps(z, t, cond.uncond), self._eps(z, t, cond.cond)
        return uncond + self.cfg_scale(cond) * (c - uncond)

    def encode(self, image):
        self.cost.encode += image.shape[0]
        z = image.flatten(1) @ self.Q.to(image).T
        return counted(z.reshape(image.shape[0], *self.state_shape), self.cost, "encode_vjp")

    def decode(self, state):
        self.cost.decode += state.shape[0]
        x = state.flatten(1) @ self.Q.to(state)
        return counted(x.reshape(state.shape[0], *self.image_shape), self.cost, "decode_vjp")

    def sample_latent(self, gens) -> torch.Tensor:
        return self.latent.sample(gens).reshape(-1, *self.state_shape)


def digits_gmm_latent(size: int = 16, rank: int = 32, delta: float = 1e-3, rotate: bool = True,
                      guidance_scale: float = 1.0) -> ExactLatentPrior:
    """`model=gmm_latent`: the digits mixture behind an orthogonal autoencoder (see ExactLatentPrior)."""
    base = digits_gmm(size, rank, delta)
    prior = ExactLatentPrior(base.mixture, base.image_shape, base.alphas_cumprod, rotate=rotate,
                             guidance_scale=guidance_scale)
    prior.config = {**base.config, "rotate": bool(rotate), "guidance_scale": float(guidance_scale)}
    return prior


def fit_digits_mixture(size: int = 16, rank: int = 32, delta: float = 1e-3) -> GaussianMixture:
    """One component per class of scikit-learn's 8×8 digits, upsampled to size×size in [-1,1].

    Each class covariance keeps its top `rank` eigenpairs; δI makes it full rank. The fit is cached; each
    call returns its own module over the cached tensors, so moving one prior (`.to`) never moves another's.
    """
    return GaussianMixture(*_fit_digits(size, rank, delta))


@functools.lru_cache(maxsize=4)
def _fit_digits(size: int, rank: int, delta: float) -> tuple:
    images, target = load_digits()  # scikit-learn's bundled digits, read without importing scikit-learn
    x = torch.tensor(images, dtype=torch.float64)[:, None] / 16.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x * 2 - 1).flatten(1)
    labels = torch.tensor(target)
    weights, means, bases, lams = [], [], [], []
    for k in range(10):
        xk = x[labels == k]
        mu = xk.mean(0)
        cov = (xk - mu).T @ (xk - mu) / (len(xk) - 1)
        evals, evecs = torch.linalg.eigh(cov)
        weights.append(float(len(xk)))
        means.append(mu)
        bases.append(evecs[:, -rank:])
        lams.append(evals[-rank:].clamp_min(0))
    return torch.tensor(weights), torch.stack(means), torch.stack(bases), torch.stack(lams), delta


def digits_gmm(size: int = 16, rank: int = 32, delta: float = 1e-3, T: int = 1000,
               beta_start: float = 1e-4, beta_end: float = 0.02) -> ExactPrior:
    """The `gmm` world's prior: the digits mixture on 1×size×size images, linear VP schedule."""
    if size < 8 or rank < 1 or rank > size * size or delta <= 0:
        raise ConfigError(f"gmm prior needs size >= 8, 1 <= rank <= size², delta > 0 (got size={size}, "
                          f"rank={rank}, delta={delta}); fix model.size/model.rank/model.delta.")
    prior = ExactPrior(fit_digits_mixture(size, rank, delta), (1, size, size),
                       linear_alphas_cumprod(T, beta_start, beta_end), name="gmm")
    prior.config = {"size": size, "rank": rank, "delta": delta, "T": T, "schedule": f"linear({beta_start},{beta_end})"}
    return prior
