"""The bottom of the import graph: what every package uses (`errors`, `rng`, `files`) and nothing else."""
