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
        assert all(row["split"] == "val" and row["n_images"] == 2 == row["n_ok"] for row in r["rows"])
        text = (tmp_path / "tables" / f"{r['name']}.md").read_text()
        # header, 3 trials, the defaults' row
        assert text.count("\n| ") == 1 + 3 + 1 and "tuned on validation, 3 trials" in text and "\n| defaults" in text
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


# -- every inverse-problem solver declares a tune block whose ranges contain its official default -------------
from pathlib import Path  # noqa: E402

SOLVER_DIR = Path(__file__).resolve().parents[1] / "conf" / "solver"
NO_TUNE = {  # config -> why it has nothing to tune
    "pinv": "measurement-only baseline A⁺y, no parameters",
    "exact": "exact posterior sampler, no parameters",
    "ddim": "prior-only baseline (ignores y)",
    "ddpm": "prior-only baseline (ignores y)",
    "bdia": "inversion / editing method, not an inverse-problem solver",
    "edict": "inversion / editing method",
    "null_text": "inversion method",
    "ddim_inversion": "inversion method",
    "stsl_edit": "restore-then-edit (task=edit); its restorer is STSL, tuned as solver=stsl",
}


@pytest.mark.parametrize("name", sorted(p.stem for p in SOLVER_DIR.glob("*.yaml")))
def test_every_inverse_problem_solver_has_a_tune_block_containing_its_default(name):
    from omegaconf import OmegaConf

    from harness.cli import compose
    from harness.tune import space

    cfg = compose([f"solver={name}"]).solver
    if name in NO_TUNE:
        with pytest.raises(ConfigError, match="declares no tunable parameters"):
            space(cfg)
        return
    params = space(cfg)
    assert params
    for key, spec in params.items():
        default = OmegaConf.select(cfg, key)
        if "choices" in spec:
            assert default in spec["choices"], (name, key, default, spec)
            continue
        lo, hi = spec["low"], spec["high"]
        assert lo < hi and (not spec.get("log") or lo > 0), (name, key, spec)
        assert lo <= default <= hi, f"{name}: default {key}={default} outside its tune range [{lo}, {hi}]"
        if spec.get("type") == "int":
            assert isinstance(default, int) and isinstance(lo, int) and isinstance(hi, int)


def test_null_entries_drop_inherited_ranges_and_dotted_names_reach_nested_parameters():
    from omegaconf import OmegaConf

    from harness.cli import compose
    from harness.tune import flatten, nest, space

    assert set(space(compose(["solver=dps"]).solver)) == {"scale"}
    assert set(space(compose(["solver=dps_dsg"]).solver)) == {"dsg.rate"}  # scale is unused under DSG
    with pytest.raises(ConfigError, match="not one of its parameters"):
        space(OmegaConf.create({"_target_": "x.Y", "dsg": {"rate": 0.2}, "tune": {"dsg.rat": {"low": 0, "high": 1}}}))
    with pytest.raises(ConfigError, match="only null entries"):
        space(OmegaConf.create({"_target_": "x.Y", "scale": 1.0, "tune": {"scale": None}}))
    tree = {"dsg": {"rate": 0.3, "interval": 2}, "steps": 5}
    assert nest(flatten(tree)) == tree and flatten(tree) == {"dsg.rate": 0.3, "dsg.interval": 2, "steps": 5}


def test_tuning_a_nested_parameter_writes_a_nested_config_that_round_trips(tmp_path):
    from harness.tune import tune

    out = tune([*GMM, "solver=dps_dsg", "task=sr4", "solver.steps=4", "solver.dsg.interval=2"], 2,
               conf_dir=str(tmp_path / "tuned"), table_dir=str(tmp_path / "tables"), root=str(tmp_path / "runs"))
    tuned = yaml.safe_load((tmp_path / "tuned" / "gmm_sr4_dps_dsg.yaml").read_text())
    assert set(out[0]["best"]) == {"dsg.rate"}
    assert tuned["solver"] == {"steps": 4, "dsg": {"interval": 2, "rate": pytest.approx(out[0]["best"]["dsg.rate"],
                                                                                         rel=1e-5)}}
    rates = [r["dsg.rate"] for r in out[0]["rows"]]
    assert len(set(rates[:2])) == 2 and rates[2] == 0.2  # the trials varied the nested value; then the default


def test_latent_priors_are_their_own_worlds_with_the_dataset_validation_split():
    from harness.tune import validation_overrides

    assert validation_overrides(["dataset=digits", "model=digits_latent"]) == ("digits_latent", ["dataset.split=val"])
    assert validation_overrides(["dataset=gmm", "model=gmm_latent"]) == ("gmm_latent", ["dataset.split=val"])
    assert validation_overrides(["dataset=digits", "model=digits"])[0] == "digits"


def test_compare_reads_only_its_world_and_flags_tuned_values_worse_than_defaults(tmp_path, monkeypatch):
    import harness.tune as T

    conf = tmp_path / "tuned"
    T.tune([*GMM, "solver=ddrm", "task=sr4", "solver.steps=5"], 1, conf_dir=str(conf),
           table_dir=str(tmp_path / "tables"), root=str(tmp_path / "runs"))
    # a latent-world file named with the same prefix is not a gmm row
    (conf / "gmm_latent_sr4_psld.yaml").write_text(
        "# @package _global_\n# psld on sr4, world gmm_latent: tuned on validation, 1 trials: gmm val split, 2 images, "
        "sw2 (minimize), Optuna TPE seed 0.\nsolver:\n  omega: 0.5\n")
    assert [f["solver"] for f in T.tuned_files("gmm", str(conf))] == ["ddrm"]
    assert [f["solver"] for f in T.tuned_files("gmm_latent", str(conf))] == ["psld"]
    monkeypatch.setitem(T.TEST_BASE, "gmm", ["dataset=gmm", "model=gmm", "run.num_samples=4", "dataset.n=2",
                                              "metrics.n_ref=64"])
    out = tmp_path / "cmp.md"
    text = T.compare("gmm", str(out), conf_dir=str(conf), root=str(tmp_path / "r"),
                     leaderboard=str(tmp_path / "r" / "lb.csv"), notes=["A hand note."])
    rows = [ln for ln in text.splitlines() if ln.startswith("| ddrm")]
    assert [r.split(" | ")[1] for r in rows] == ["official defaults", "tuned on validation, 1 trials"]
    assert "solver.steps=5" in rows[0] and "solver.eta=" in rows[1] and "solver.eta=" not in rows[0]
    assert "Tuning budget (the same for every row): 1 trials, gmm val split, 2 images" in text
    d, t = (float(r.split(" | ")[3]) for r in rows)
    flagged = "ddrm on sr4 (sw2" in text
    assert flagged == (t > d) and text.rstrip().endswith("A hand note.") and out.read_text() == text


def test_compare_refuses_a_world_it_does_not_know():
    from harness.tune import compare

    with pytest.raises(ConfigError, match="knows the worlds"):
        compare("ffhq", "/nonexistent/x.md")


def test_benchmark_merge_replaces_only_the_named_rows_and_keeps_the_text():
    """benchmarks/*_solvers.py --solvers: regenerated rows replace theirs; other rows and notes stay."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.gmm_solvers import merge_rows

    text = ("# T\n\nA note.\n\n## sr4\n\n| solver | a |\n|---|---|\n| dps | 1 |\n| daps (50×2) | 2 |\n\n"
            "## inpaint_box\n\n| solver | a |\n|---|---|\n| daps (50×2) | 3 |\n")
    out = merge_rows(text, "sr4", [["daps (50×2)", "9"], ["new", "5"]])
    assert out == text.replace("| daps (50×2) | 2 |", "| daps (50×2) | 9 |\n| new | 5 |")
    with pytest.raises(ConfigError, match="no `## deblur` section"):
        merge_rows(text, "deblur", [["x", "1"]])


def test_a_diverged_trial_counts_as_the_worst_value_and_all_diverged_is_one_sentence(tmp_path, monkeypatch):
    import math

    import harness.runner
    from harness.tune import tune

    calls = []

    def fake(cfg):  # sw2 = eta below 0.5, a diverged (NaN) run above
        eta = float(cfg.solver.eta)
        calls.append(eta)
        return {"sw2": eta if eta < 0.5 else float("nan"), "nfe": 1, "split": "val", "n_images": 2,
                "n_ok": 2 if eta < 0.5 else 0}

    monkeypatch.setattr(harness.runner, "run_cell", fake)
    out = tune([*GMM, "solver=ddrm", "task=sr4"], 8, conf_dir=str(tmp_path / "c"), table_dir=str(tmp_path / "t"),
               root=str(tmp_path / "r"))[0]
    # the budget is spent, diverged trials included, and the defaults (eta 0.85: diverged here) scored once more
    assert len(calls) == 9 and any(e >= 0.5 for e in calls[:8]) and calls[8] == 0.85
    assert out["best"]["eta"] == min(e for e in calls if e < 0.5) and math.isfinite(out["value"])
    text = (tmp_path / "t" / "gmm_sr4_ddrm.md").read_text()
    assert "| nan |" in text and "| val | 2 | 0 |" in text  # shown as diverged (0 of 2 images ok), not hidden
    assert "gmm val split, 2 images" in text  # the split's size, whichever trial came first
    monkeypatch.setattr(harness.runner, "run_cell", lambda cfg: {"sw2": float("nan"), "split": "val", "n_images": 2, "n_ok": 2})
    with pytest.raises(ConfigError, match="every --tune trial of ddrm on sr4 diverged"):
        tune([*GMM, "solver=ddrm", "task=sr4"], 2, conf_dir=str(tmp_path / "c2"), table_dir=str(tmp_path / "t2"),
             root=str(tmp_path / "r2"))


def test_the_defaults_are_one_more_candidate_kept_when_no_trial_beats_them(tmp_path, monkeypatch):
    """The defaults are scored after the TPE trials (outside their history) and kept on a tie or a win, so
    tuning never writes values that score worse on validation than the shipped ones; a draw equal to the
    defaults is not run twice."""
    import harness.runner
    from harness.tune import tune, tuned_files

    calls = []

    def fake(cfg):  # sw2 = |eta - 0.85|: the defaults (eta 0.85) are the optimum
        calls.append(float(cfg.solver.eta))
        return {"sw2": abs(float(cfg.solver.eta) - 0.85), "nfe": 1, "split": "val", "n_images": 2, "n_ok": 2}

    monkeypatch.setattr(harness.runner, "run_cell", fake)
    kw = dict(conf_dir=str(tmp_path / "c"), table_dir=str(tmp_path / "t"), root=str(tmp_path / "r"))
    out = tune([*GMM, "solver=ddrm", "task=sr4"], 4, **kw)[0]
    assert len(calls) == 5 and calls[-1] == 0.85 and 0.85 not in calls[:4]
    assert out["kept_defaults"] and out["best"] == {"eta": 0.85} and out["value"] == 0
    text = (tmp_path / "t" / "gmm_sr4_ddrm.md").read_text()
    assert "| defaults (chosen) | 0.85 | 0 |" in text and "Kept: the defaults eta=0.85" in text
    (f,) = tuned_files("gmm", kw["conf_dir"])
    assert f["kept"] and f["values"]["eta"] == 0.85 and "the defaults scored too" in f["budget"]
    from harness.tune import compare

    text = compare("gmm", str(tmp_path / "cmp.md"), conf_dir=kw["conf_dir"], root=str(tmp_path / "rt"),
                   leaderboard=str(tmp_path / "rt" / "lb.csv"))
    assert "| ddrm | tuned on validation, 4 trials (defaults kept) | solver.eta=0.85 |" in text
    # a trial that beats the defaults is chosen; the defaults' row is still in the table
    calls.clear()
    monkeypatch.setattr(harness.runner, "run_cell", lambda cfg: (calls.append(float(cfg.solver.eta)), {
        "sw2": float(cfg.solver.eta), "nfe": 1, "split": "val", "n_images": 2, "n_ok": 2})[1])
    out = tune([*GMM, "solver=ddrm", "task=sr4"], 4, **kw)[0]
    assert not out["kept_defaults"] and out["best"]["eta"] == min(calls) < 0.85
    assert "| defaults | 0.85 |" in (tmp_path / "t" / "gmm_sr4_ddrm.md").read_text()
    assert not tuned_files("gmm", kw["conf_dir"])[0]["kept"]
    # a draw equal to the defaults (a one-choice space) is not run again
    calls.clear()
    monkeypatch.setattr("harness.tune.space", lambda solver_cfg: {"eta": {"choices": [0.85]}})
    out = tune([*GMM, "solver=ddrm", "task=sr4"], 2, **kw)[0]
    assert calls == [0.85, 0.85] and out["kept_defaults"]  # the two trials only, no third run
    assert "| 0 (= defaults) (chosen) |" in (tmp_path / "t" / "gmm_sr4_ddrm.md").read_text()


def test_edge_of_range_detection():
    from harness.tune import at_edge

    # an end that is the parameter's own bound (limits) is not flagged; the other end still is
    assert not at_edge(0.99, {"low": 0.0, "high": 1.0, "limits": ["low", "high"]})
    assert not at_edge(1.0, {"low": 0.01, "high": 1.0, "log": True, "limits": ["high"]})
    assert at_edge(0.0101, {"low": 0.01, "high": 1.0, "log": True, "limits": ["high"]})

    assert at_edge(4.9, {"low": 0.1, "high": 5.0, "log": True}) and not at_edge(1.0, {"low": 0.1, "high": 5.0, "log": True})
    assert at_edge(0.02, {"low": 0.0, "high": 1.0}) and not at_edge(0.5, {"low": 0.0, "high": 1.0})
    assert not at_edge("auto", {"choices": ["auto", "decoder"]})


@pytest.mark.parametrize("script", ["gmm_solvers", "digits_solvers"])
def test_benchmark_merge_refuses_unknown_solvers_and_missing_sections_before_compute(tmp_path, script, monkeypatch,
                                                                                     capsys):
    """--solvers names a solver the table lacks, or the file to merge into lacks a task's section: exit 2,
    one sentence, the file untouched, nothing run (both scripts share benchmarks.gmm_solvers.refuse_bad_merge)."""
    import importlib
    import sys

    import harness.runner

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main = importlib.import_module(f"benchmarks.{script}").main
    monkeypatch.setattr(harness.runner, "run_cell", lambda cfg: pytest.fail("a cell ran"))
    out = tmp_path / "t.md"
    out.write_text("# T\n\n## inpaint_box\n\n| solver | a |\n|---|---|\n| dps | 1 |\n")
    for solvers, word in (("nope", "nope"), ("dps", "sr4")):
        argv = ["--solvers", solvers, "--out", str(out), "--root", str(tmp_path / "runs")]
        monkeypatch.setattr(sys, "argv", [script, *argv])
        with pytest.raises(SystemExit) as e:
            main(argv) if script == "gmm_solvers" else main()
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith(f"error: {word}") and err.count("\n") == 1, err
        assert "run without --solvers first" in err
    assert out.read_text().endswith("| dps | 1 |\n") and not (tmp_path / "runs").exists()


def test_the_latent_digits_table_composes_its_tuned_rows_and_takes_no_step_size_by_hand():
    """benchmarks/digits_solvers.py --latent: every row composes (each +tuned file exists); a row's own overrides
    are budgets, or a named variant at a declared limit of a range (STSL-biased: trace_weight 0), never a tuned
    step size chosen by hand (those come from conf/tuned)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.digits_solvers import LATENT, TASKS
    from harness.cli import compose
    from harness.tune import space

    for shown, name, over, per_task in LATENT:
        for task in TASKS:
            if per_task.get(task, []) is None:
                continue
            extra = [*over, *per_task.get(task, [])]
            cfg = compose(["dataset=digits", "model=digits_latent", "run.prompt=null", f"task={task}",
                           f"solver={name}", *extra])
            if name in ("pinv", "ddim"):
                continue
            ranges = space(cfg.solver)
            for o in extra:
                key, _, value = o.partition("=")
                key = key.removeprefix("solver.")
                if o.startswith("solver.") and key in ranges:  # only a variant at the range's own bound
                    ends = {float(ranges[key][e]) for e in ranges[key].get("limits", [])}
                    assert float(value) in ends, (shown, task, o)
            assert "tuned" not in shown or any(o.startswith("+tuned=") for o in extra), shown
