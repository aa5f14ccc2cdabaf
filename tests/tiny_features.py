"""A tiny fixed feature extractor for FID/KID plumbing tests: [-1,1] images -> 8 random projections."""
import torch


def features(x: torch.Tensor) -> torch.Tensor:
    d = x[0].numel()
    g = torch.Generator().manual_seed(1234)
    w = torch.randn(d, 8, generator=g, dtype=torch.float64) / d ** 0.5
    return torch.tanh(x.flatten(1).double().cpu() @ w * 4)
