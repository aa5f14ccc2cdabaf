"""Scripts that make or convert the project's models: training and evaluating the shipped digits priors
(`python -m tools.train_digits`, `python -m tools.eval_digits`) and converting ADM checkpoints
(`python -m tools.convert_adm`). They may import anything; nothing in the packages imports them."""
