"""The bottom of the import graph: what every package uses (`errors`, `rng`, `files`, and `digits`, the bundled
source of the digits world that data/ and models/ both read) and nothing else."""
