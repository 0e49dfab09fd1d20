"""A/B comparison: the statistics against scipy / scikit-learn, and the verdicts on real runs."""

import json
import shutil

import numpy as np
import pytest
import torch
from scipy.stats import binom
from sklearn.metrics import f1_score

from factory import ROOT, infer
from pipeline.models.trained_run import load_run
from pipeline.tools.compare import main as compare
from pipeline.tools.stats import interval, mcnemar_exact, paired_bootstrap

DEMO_TEST = ROOT / "data" / "demo" / "test"


def test_mcnemar_is_the_exact_binomial_on_a_hand_made_table():
    # 2x2 table of (A right?, B right?): 40 both, 3 only A, 12 only B, 5 neither
    expected = 2 * binom.cdf(3, 3 + 12, 0.5)
    assert mcnemar_exact(3, 12) == pytest.approx(expected, rel=1e-12)
    assert mcnemar_exact(12, 3) == pytest.approx(expected, rel=1e-12)
    assert mcnemar_exact(7, 7) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 8) == pytest.approx(2 * 0.5**8)


def test_bootstrap_scores_match_scikit_learn_and_pair_the_resamples():
    rng = np.random.default_rng(1)
    true = list(rng.choice(list("abcd"), 300))
    a = [t if rng.random() < 0.7 else rng.choice(list("abcd")) for t in true]
    b = [t if rng.random() < 0.8 else rng.choice(list("abcd")) for t in true]
    whole_a, whole_b, boot_a, boot_b = paired_bootstrap(true, a, b, resamples=500, seed=3)
    assert whole_a.f1_macro[0] == pytest.approx(f1_score(true, a, average="macro"))
    assert whole_b.accuracy[0] == pytest.approx(np.mean(np.array(b) == np.array(true)))
    low, high = interval(boot_a.accuracy)
    assert low < whole_a.accuracy[0] < high and high - low < 0.15
    again = paired_bootstrap(true, a, b, resamples=500, seed=3)  # a fixed seed gives the same intervals
    assert np.array_equal(again[2].f1_macro, boot_a.f1_macro)
    same = paired_bootstrap(true, a, a, resamples=200)  # paired: a model against itself never differs
    assert np.array_equal(same[2].f1_macro, same[3].f1_macro)

    labels = [["x"], ["x", "y"], [], ["y"]] * 25  # multi-label answers: right only when the set is
    said = [["x"], ["x"], [], ["y", "x"]] * 25
    whole, _, _, _ = paired_bootstrap(labels, said, said, resamples=10)
    assert whole.accuracy[0] == pytest.approx(0.5)


def test_identical_runs_are_neither(demo_text_run, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert compare([str(demo_text_run), str(demo_text_run), "--input", str(DEMO_TEST), "--output", str(out)]) == 3
    result = json.loads((out / "compare.json").read_text())
    assert result["verdict"] == "neither" and result["records"] == 90
    for r in result["tasks"].values():
        assert r["mcnemar"]["p_value"] == 1.0 and r["agreement"] == 1.0
        low, high = r["f1_macro"]["difference_ci"]
        assert low <= 0 <= high
        assert r["accuracy"]["a_ci"] == r["accuracy"]["b_ci"]
    assert (out / "intervals.png").stat().st_size > 5_000
    assert "verdict: neither (exit 3)" in (out / "compare.txt").read_text()


def weakened_copy(run_dir, dest):
    """The run with every head and TF-IDF bias pushed towards each task's first class."""
    shutil.copytree(run_dir, dest)
    run = load_run(dest)
    ckpt = torch.load(run.checkpoint, weights_only=True)
    state = ckpt["state_dict"]
    for task in run.model.tasks:
        state[f"model.heads.heads.{task}.1.bias"][0] += 6.0
        state["model.text_linear.bias"][run.model.model.text_linear.task_slice(task).start] += 6.0
    torch.save(ckpt, run.checkpoint)
    return dest


def test_a_weakened_copy_is_worse_and_gates_with_its_exit_status(demo_text_run, tmp_path, capsys):
    weak = weakened_copy(demo_text_run, tmp_path / "weak")
    out = tmp_path / "cmp"
    assert compare([str(demo_text_run), str(weak), "--input", str(DEMO_TEST), "--output", str(out)]) == 1
    result = json.loads((out / "compare.json").read_text())
    assert result["verdict"] == "B worse"
    worse = [t for t, r in result["tasks"].items() if r["verdict"] == "B worse"]
    assert worse and all(result["tasks"][t]["mcnemar"]["p_value"] < 0.01 for t in worse)
    assert all(result["tasks"][t]["accuracy"]["difference_ci"][1] < 0 for t in worse)
    example = result["tasks"][worse[0]]["examples"][0]
    assert example["a"] != example["b"] and example["right"] in ("A", "B", "neither")
    # the other way round, B is the better one
    assert compare([str(weak), str(demo_text_run), "--input", str(DEMO_TEST)]) == 0


def test_prediction_files_compare_like_the_runs(demo_text_run, tmp_path, capsys):
    weak = weakened_copy(demo_text_run, tmp_path / "weak")
    files = []
    for run, name in ((demo_text_run, "a.jsonl"), (weak, "b.csv")):
        assert infer("--checkpoint", run, "--input", DEMO_TEST, "--output", tmp_path / name, "--evaluate") == 0
        files.append(str(tmp_path / name))
    assert compare([*files, "--output", str(tmp_path / "from_files")]) == 1
    assert (
        compare([str(demo_text_run), str(weak), "--input", str(DEMO_TEST), "--output", str(tmp_path / "from_runs")])
        == 1
    )
    from_files = json.loads((tmp_path / "from_files" / "compare.json").read_text())["tasks"]
    from_runs = json.loads((tmp_path / "from_runs" / "compare.json").read_text())["tasks"]
    for task in from_runs:
        for key in ("accuracy", "f1_macro", "mcnemar", "agreement"):
            assert from_files[task][key] == from_runs[task][key]
    capsys.readouterr()
    no_labels = tmp_path / "n.jsonl"
    assert infer("--checkpoint", demo_text_run, "--input", DEMO_TEST, "--output", no_labels) == 0
    assert compare([str(no_labels), str(no_labels)]) == 2
    assert "infer.py --evaluate" in capsys.readouterr().err
    assert compare([str(demo_text_run), str(weak)]) == 2
