"""One solver per file; shared maths in solvers.common. Imports models' and tasks' interfaces only."""
