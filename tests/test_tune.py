"""The tuning protocol (harness/tune.py): validation splits, equal budgets, round-trips, no test ids."""
import pytest
import yaml

from core.errors import ConfigError

GMM = ["+experiment=gmm", "dataset.n=2", "metrics.n_ref=64", "run.num_samples=4"]


def test_validation_splits_are_disjoint_from_test():
    from data.digits import DigitsDataset, split_indices
    from types import SimpleNamespace

    s = split_indices()
    assert s["val"] and not set(s["val"]) & set(s["test"]) and not set(s["val"]) & set(s["train"])
    ds = DigitsDataset(SimpleNamespace(image_shape=(1, 16, 16), name="f"), n=None, split="val")
    assert ds.ids == s["val"]
    # gmm: the split is part of every draw's seed, so val id 0 is not test id 0
    from harness.cli import compose
    from harness.build import build_cell

    test = build_cell(compose(["+experiment=gmm", "dataset.n=1"])).dataset
    val = build_cell(compose(["+experiment=gmm", "dataset.n=1", "dataset.split=val"])).dataset
    assert test.ids == val.ids == [0] and not (test.load(0)[0] == val.load(0)[0]).all()
    with pytest.raises(ConfigError, match="not a gmm split"):
        build_cell(compose(["+experiment=gmm", "dataset.split=valid"]))


def test_tune_block_is_outside_the_identity_and_never_reaches_the_solver():
    from harness.cli import compose
    from harness.build import build_cell
    from harness.runner import cell_config

    cfg = compose(["+experiment=gmm", "solver=dps", "dataset.n=1"])
    assert "tune" in cfg.solver and "tune" not in cell_config(cfg)["solver"]
    from omegaconf import open_dict

    bare = compose(["+experiment=gmm", "solver=dps", "dataset.n=1"])
    with open_dict(bare):
        del bare.solver["tune"]
    assert cell_config(bare) == cell_config(cfg)  # declaring ranges renames no cell
    build_cell(cfg)  # `tune` is not passed to DPS(...)


def test_every_tuned_solver_declares_a_space_over_its_own_parameters():
    from harness.cli import compose
    from harness.tune import space

    for s in ["dps", "ddrm", "diffpir", "reddiff", "daps", "pigdm", "mcg", "freedom"]:
        params = space(compose(["+experiment=gmm", f"solver={s}"]).solver)
        assert params and all(k in compose([f"solver={s}"]).solver for k in params)
    with pytest.raises(ConfigError, match="declares no tunable parameters"):
        space(compose(["solver=ddim"]).solver)


def test_tuning_refuses_a_test_split_on_the_command_line():
    from harness.tune import tune

    with pytest.raises(ConfigError, match="picks the validation split itself"):
        tune([*GMM, "solver=ddrm", "task=sr4", "dataset.split=test"], 2)


def test_tiny_gmm_tune_end_to_end_equal_budget_round_trip_and_no_test_ids(tmp_path, monkeypatch):
    from data.gmm import GMMDataset
    from harness.cli import compose
    from harness.tune import tune

    seen = []
    load = GMMDataset.load
    monkeypatch.setattr(GMMDataset, "load", lambda self, i: (seen.append((self.split, i)), load(self, i))[1])
    out = tune([*GMM, "solver=ddrm,reddiff", "task=sr4", "solver.steps=5"], 3, conf_dir=str(tmp_path / "tuned"),
               table_dir=str(tmp_path / "tables"), root=str(tmp_path / "runs"))
    assert [r["trials"] for r in out] == [3, 3]  # the same budget for every solver
    assert seen and {s for s, _ in seen} == {"val"}  # tuning never reads a test draw
    for r in out:
        assert all(row["split"] == "val" and row["n_images"] == 2 for row in r["rows"])
        text = (tmp_path / "tables" / f"{r['name']}.md").read_text()
        assert text.count("\n| ") == 1 + 3 and "tuned on validation, 3 trials" in text
        tuned = yaml.safe_load((tmp_path / "tuned" / f"{r['name']}.yaml").read_text())
        assert tuned["solver"]["steps"] == 5
        for k, v in r["best"].items():
            assert tuned["solver"][k] == pytest.approx(v, rel=1e-5)
    # the best config round-trips as +tuned=<name> from the conf/tuned group
    import shutil
    from pathlib import Path

    conf = Path(__file__).resolve().parents[1] / "conf" / "tuned"
    name = "zz_test_roundtrip"
    made = not conf.exists()
    conf.mkdir(exist_ok=True)
    shutil.copy(tmp_path / "tuned" / f"{out[0]['name']}.yaml", conf / f"{name}.yaml")
    try:
        cfg = compose(["+experiment=gmm", "solver=ddrm", "task=sr4", f"+tuned={name}"])
        assert cfg.solver.eta == pytest.approx(out[0]["best"]["eta"], rel=1e-5) and cfg.solver.steps == 5
    finally:
        (conf / f"{name}.yaml").unlink()
        if made:
            conf.rmdir()


def test_digits_tuning_reads_only_validation_ids(tmp_path, monkeypatch):
    from data.digits import DigitsDataset, split_indices
    from harness.tune import tune

    seen = []
    load = DigitsDataset.load
    monkeypatch.setattr(DigitsDataset, "load", lambda self, i: (seen.append(int(i)), load(self, i))[1])
    tune(["dataset.n=1", "solver=ddrm", "task=inpaint_box", "solver.steps=2"], 1, conf_dir=str(tmp_path / "c"),
         table_dir=str(tmp_path / "t"), root=str(tmp_path / "r"))
    assert seen and set(seen) <= set(split_indices()["val"]) and not set(seen) & set(split_indices()["test"])
