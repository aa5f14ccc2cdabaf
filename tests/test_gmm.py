"""The exact world is exact: scores, Tweedie means and posteriors against independent computations."""
import math

import torch

from models.gmm import GaussianMixture
from tasks.inpaint import BoxInpainting
from core.rng import generator
from tasks.sr import AvgPoolSR


def small_mixture(d=2, K=3, r=1, seed=0):
    g = generator("small-mixture", seed)
    means = torch.randn(K, d, generator=g, dtype=torch.float64)
    bases = torch.linalg.qr(torch.randn(K, d, d, generator=g, dtype=torch.float64))[0][..., :r]
    lams = torch.rand(K, r, generator=g, dtype=torch.float64) + 0.2
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)[:K], means, bases, lams, 0.05)


def test_score_is_gradient_of_log_density(prior):
    mix = prior.mixture
    x = torch.randn(4, mix.d, generator=generator("fd"), dtype=torch.float64)
    v = torch.randn(4, mix.d, generator=generator("fd-dir"), dtype=torch.float64)
    for t in (10, 300, 900):
        a = prior.alphas_cumprod[t].expand(4)
        xt = a.sqrt()[:, None] * x + (1 - a).sqrt()[:, None] * torch.randn(4, mix.d, generator=generator("n", t), dtype=torch.float64)
        h = 1e-5
        fd = (mix.log_prob_t(xt + h * v, a) - mix.log_prob_t(xt - h * v, a)) / (2 * h)
        exact = (mix.score_t(xt, a) * v).sum(1)
        assert torch.allclose(fd, exact, rtol=1e-5, atol=1e-4), (t, fd, exact)


def test_prior_eps_and_x0_are_the_closed_forms(prior):
    xt = torch.randn(3, 1, 16, 16, dtype=torch.float64)
    t = torch.tensor([5, 400, 999])
    eps, x0 = prior.predict(xt, t)
    a = prior.alphas_cumprod[t]
    score = prior.mixture.score_t(xt.flatten(1), a)
    assert torch.allclose(eps.flatten(1), -(1 - a).sqrt()[:, None] * score, atol=1e-12)
    assert torch.allclose(x0.flatten(1), prior.mixture.tweedie_t(xt.flatten(1), a), atol=1e-10)


def test_tweedie_mean_matches_monte_carlo():
    """In 2-D, E[x0 | x_t] by self-normalised importance sampling over 10⁶ prior draws."""
    mix = small_mixture()
    g, n = generator("mc"), 400_000
    k = torch.multinomial(mix.weights, n, replacement=True, generator=g)  # an independent, vectorised sampler
    z = torch.randn(n, 1, generator=g, dtype=torch.float64)
    x0 = (mix.means[k] + mix.bases[k][..., 0] * mix.lams[k].sqrt() * z
          + mix.delta ** 0.5 * torch.randn(n, 2, generator=g, dtype=torch.float64))
    for abar in (0.3, 0.8):
        a = torch.tensor([abar], dtype=torch.float64)
        xt = torch.tensor([[0.4, -0.7]], dtype=torch.float64)
        logw = -((xt - a.sqrt() * x0) ** 2).sum(1) / (2 * (1 - a))
        w = torch.softmax(logw, 0)
        mc = (w[:, None] * x0).sum(0)
        ess = 1 / (w ** 2).sum()
        se = ((w[:, None] * (x0 - mc) ** 2).sum(0) / ess).sqrt()
        exact = mix.tweedie_t(xt, a)[0]
        assert ((mc - exact).abs() < 5 * se + 1e-3).all(), (abar, mc, exact, se)


def gaussian_posterior_by_hand(mu, S, A, y, s2):
    """Precision form (an independent route from the code's covariance form)."""
    P = torch.linalg.inv(S) + A.T @ A / s2
    cov = torch.linalg.inv(P)
    return cov @ (torch.linalg.solve(S, mu) + A.T @ y / s2), cov


def test_single_component_posterior_mean_covariance_and_samples():
    from models.gmm import ExactPrior

    g = generator("one-gaussian")
    d, r = 64, 6
    mix = GaussianMixture(torch.ones(1, dtype=torch.float64), torch.randn(1, d, generator=g, dtype=torch.float64) * 0.3,
                          torch.linalg.qr(torch.randn(1, d, r, generator=g, dtype=torch.float64))[0],
                          torch.rand(1, r, generator=g, dtype=torch.float64) + 0.5, 0.02)
    prior = ExactPrior(mix, (1, 8, 8))
    task = BoxInpainting((1, 8, 8), {"sigma": 0.1}, box=4, margin=1)
    bound = task.bind(task.draw([3], seed=0))
    x = prior.sample_prior([generator("truth")])
    y = bound.measure(x, [generator("noise")])
    post = prior.posterior(bound, y)
    A = bound.matrix()
    mean, cov = gaussian_posterior_by_hand(mix.means[0], mix.covariance(0), A, y.flatten().double(), 0.1 ** 2)
    assert torch.allclose(post.mean, mean, atol=1e-9)
    assert torch.allclose(post.covariance, cov, atol=1e-9)
    # Samples: mean within 5 standard errors everywhere, covariance within Monte-Carlo error.
    n = 40_000
    s = post.sample(n, generator("post-samples"))
    se = cov.diagonal().sqrt() / math.sqrt(n)
    assert ((s.mean(0) - mean).abs() < 5 * se).all()
    emp = torch.cov(s.T)
    assert (emp - cov).abs().max() < 5 * cov.diagonal().max() * math.sqrt(2 / n)


def test_mixture_posterior_weights_follow_bayes(prior):
    task = AvgPoolSR((1, 16, 16), {"sigma": 0.05}, factor=4).bind({})
    x = prior.sample_prior([generator("w-truth")])
    y = task.measure(x, [generator("w-noise")])
    post = prior.posterior(task, y)
    A, mix = task.matrix(), prior.mixture
    logw = torch.stack([
        mix.weights[k].log() + torch.distributions.MultivariateNormal(
            A @ mix.means[k], A @ mix.covariance(k) @ A.T + 0.05 ** 2 * torch.eye(A.shape[0], dtype=torch.float64)
        ).log_prob(y.flatten().double())
        for k in range(len(mix.weights))])
    assert torch.allclose(post.weights, torch.softmax(logw, 0), atol=1e-8)
