"""The exact world: a Gaussian-mixture data distribution whose scores and posteriors are closed-form.

p0(x) = Σ_k w_k N(x; μ_k, Σ_k) with Σ_k = U_k diag(λ_k) U_kᵀ + δ I (U_k orthonormal, d×r).
Under the VP forward process x_t = √ᾱ x0 + √(1-ᾱ) ε the marginal is again a mixture with
covariances C_k = ᾱ Σ_k + (1-ᾱ) I = U_k diag(ᾱλ_k) U_kᵀ + c I, c = ᾱδ + 1 - ᾱ, whose inverse and
log-determinant follow from Woodbury in O(d r). Everything is computed in float64.
"""
from __future__ import annotations

import functools
import math

import torch

from models.base import Prior, linear_alphas_cumprod
from tasks.errors import ConfigError
from tasks.rng import randn


class GaussianMixture:
    def __init__(self, weights, means, bases, lams, delta: float):
        self.weights = weights.double() / weights.sum()  # [K]
        self.means = means.double()  # [K, d]
        self.bases = bases.double()  # [K, d, r]
        self.lams = lams.double()  # [K, r]
        self.delta = float(delta)

    @property
    def d(self) -> int:
        return self.means.shape[1]

    def covariance(self, k: int) -> torch.Tensor:
        U, lam = self.bases[k], self.lams[k]
        return (U * lam) @ U.T + self.delta * torch.eye(self.d, dtype=torch.float64)

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

    def score_t(self, x, abar):
        logn, cinv_diff = self._terms(x, abar)
        resp = torch.softmax(logn + self.weights.log(), dim=1)
        return -(resp[..., None] * cinv_diff).sum(1)

    def tweedie_t(self, x, abar):
        """E[x0 | x_t] = (x_t + (1-ᾱ) ∇log p_t) / √ᾱ."""
        a = abar.reshape(-1, 1)
        return (x + (1 - a) * self.score_t(x, abar)) / a.sqrt()

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
        mix, s2 = self.mixture, task.sigma_y ** 2
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


@functools.lru_cache(maxsize=4)
def fit_digits_mixture(size: int = 16, rank: int = 32, delta: float = 1e-3) -> GaussianMixture:
    """One component per class of scikit-learn's 8×8 digits, upsampled to size×size in [-1,1].

    Each class covariance keeps its top `rank` eigenpairs; δI makes it full rank.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float64)[:, None] / 16.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x * 2 - 1).flatten(1)
    labels = torch.tensor(digits.target)
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
    return GaussianMixture(torch.tensor(weights), torch.stack(means), torch.stack(bases), torch.stack(lams), delta)


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
