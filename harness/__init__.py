"""The loop: batching, seeding, frozen measurements, rows, resume, grids, loggers."""
