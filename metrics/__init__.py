"""Per-image, per-set, exact-posterior and cost metrics."""
