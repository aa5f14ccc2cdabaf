"""Forward operators and noise models. Knows torch only."""
