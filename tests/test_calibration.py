"""Calibrated confidence and the review band: the fits, what training stores, what infer.py writes."""

import json
import shutil

import numpy as np
import pytest
import torch
from scipy.stats import binom

from factory import ROOT, infer, read_jsonl
from pipeline.confidence.calibration import (
    Calibration,
    decisions,
    expected_calibration_error,
    fit_platt,
    fit_temperature,
)
from pipeline.confidence.clopper_pearson import lower_bound, lower_bound_reaches, regularized_beta
from pipeline.confidence.review import ReviewBand, choose_threshold, record_decisions, row_confidence

DEMO_TEST = ROOT / "data" / "demo" / "test"


def test_temperature_and_platt_recover_the_scaling_that_made_the_labels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(20000, 4, generator=g) * 3
    labels = torch.multinomial(torch.softmax(logits / 2.0, dim=-1), 1, generator=g).squeeze(1)
    assert fit_temperature(logits, labels) == pytest.approx(2.0, rel=0.05)

    z = torch.randn(20000, 2, generator=g) * 3
    truth = torch.bernoulli(torch.sigmoid(z * torch.tensor([0.5, 2.0]) + torch.tensor([-1.0, 0.5])), generator=g)
    truth[:100, 0] = -1  # unknown labels are left out
    scale, bias = fit_platt(z, truth)
    assert scale.tolist() == pytest.approx([0.5, 2.0], rel=0.1)
    assert bias.tolist() == pytest.approx([-1.0, 0.5], abs=0.1)


def test_a_validation_split_without_mistakes_does_not_make_the_model_certain():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]]).repeat(50, 1)
    labels = torch.tensor([0, 1]).repeat(50)
    t = fit_temperature(logits, labels)  # unsoftened, the best temperature would run to 0
    top = torch.softmax(logits / t, dim=-1).max(dim=-1).values
    assert 0.97 < float(top[0]) < 0.999


def test_calibration_keeps_the_winner_and_starts_as_the_identity():
    calibration = Calibration({"a": ["x", "y", "z"], "m": ["p", "q"]}, {"m"})
    logits = {"a": torch.randn(8, 3), "m": torch.randn(8, 2)}
    assert all(torch.equal(calibration(logits)[t], logits[t]) for t in logits)
    calibration.fit(logits, {"a": torch.randint(0, 3, (8,)), "m": torch.randint(0, 2, (8, 2)).float()})
    out = calibration(logits)
    assert torch.equal(out["a"].argmax(-1), logits["a"].argmax(-1))
    assert torch.equal(out["m"] > 0, logits["m"] * calibration.platt_scale_m + calibration.platt_bias_m > 0)


def test_ece_by_hand():
    confidence = torch.tensor([0.95, 0.95, 0.65, 0.65, 0.65, 0.65])
    correct = torch.tensor([True, False, True, True, True, False])
    # bin 0.93-1.0: 2 decisions, confidence 0.95, accuracy 0.5; bin 0.6-0.67: 4, 0.65 against 0.75
    assert expected_calibration_error(confidence, correct) == pytest.approx((2 * 0.45 + 4 * 0.10) / 6)
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    c, right = decisions(probs, torch.tensor([0, 0]), multilabel=False)
    assert c.tolist() == pytest.approx([0.9, 0.8]) and right.tolist() == [True, False]
    c, right = decisions(probs, torch.tensor([[1.0, -1.0], [1.0, 1.0]]), multilabel=True)
    assert c.tolist() == pytest.approx([0.9, 0.8, 0.8]) and right.tolist() == [True, False, True]


def test_threshold_is_the_widest_whose_precision_bound_reaches_the_target():
    confidence = [1 - i / 1000 for i in range(200)]
    right = [True] * 100 + [i % 2 == 0 for i in range(100)]
    t = choose_threshold(confidence, right, 0.9)
    k = round(t.coverage * 200)
    hits = sum(right[:k])
    assert t.value == confidence[k - 1] and t.precision == hits / k > 0.9
    # Clopper-Pearson: at the lower bound, k records show `hits` or more right 5% of the time
    assert binom.sf(hits - 1, k, t.lower_bound) == pytest.approx(0.05, abs=1e-6) and t.lower_bound >= 0.9
    for wider in range(k + 1, 201):  # no wider band shows precision above 0.9 at the 5% level
        assert binom.sf(sum(right[:wider]) - 1, wider, 0.9) > 0.05

    ties = choose_threshold([0.99] * 60 + [0.9] * 10, [True] * 61 + [False] * 9, 0.9)
    assert ties.value == 0.99 and ties.coverage == pytest.approx(60 / 70)  # records of one confidence go together
    nothing = choose_threshold([0.9, 0.8], [False, True], 0.99)
    assert nothing.value is None and nothing.coverage == 0


def test_a_multilabel_answer_is_as_sure_as_its_least_certain_call():
    probs = torch.tensor([[0.9, 0.2], [0.6, 0.99], [0.3, 0.4]])
    target = torch.tensor([[1.0, 0.0], [1.0, -1.0], [1.0, 0.0]])  # -1: unknown, left out
    confidence, right = record_decisions(probs, target, multilabel=True)
    assert confidence == pytest.approx([0.8, 0.6, 0.6]) and right == [True, True, False]
    assert row_confidence({"a": 0.9, "b": 0.2}, multilabel=True) == pytest.approx(0.8)
    assert row_confidence({"a": 0.7, "b": 0.2}, multilabel=False) == 0.7


def test_training_calibrates_on_validation_and_stores_it_in_the_checkpoint(demo_text_run):
    metrics = json.loads((demo_text_run / "metrics.json").read_text())
    run = json.loads((demo_text_run / "run.json").read_text())
    for split in ("val", "test"):
        for values in metrics[split].values():
            c = values["calibration"]  # every record with evidence (a few demo records have none)
            assert 85 <= c["decisions"] <= 90 and {"ece_before", "ece_after", "nll_before", "nll_after"} <= set(c)
    assert metrics["val"]["category"]["calibration"]["decisions"] == run["val_records"]
    for values in metrics["val"].values():  # the fit minimises (softened) NLL on validation
        assert values["calibration"]["nll_after"] <= values["calibration"]["nll_before"] + 1e-3
    assert (demo_text_run / "reliability.png").stat().st_size > 10_000
    ckpt = torch.load(run["best_checkpoint"], weights_only=True)
    temperatures = ckpt["state_dict"]["calibration.temperature"]
    assert temperatures.tolist() == pytest.approx([run["calibration"][t]["temperature"] for t in metrics["val"]])
    assert not torch.allclose(temperatures, torch.ones(3))
    assert run["review"]["precision"] == 0.9 and set(run["review"]["tasks"]) == {"category", "sentiment", "severity"}
    assert (demo_text_run / "review.json").is_file()


def test_infer_is_calibrated_by_default_and_uncalibrated_on_request(demo_text_run, tmp_path):
    assert infer("--checkpoint", demo_text_run, "--input", DEMO_TEST, "--output", tmp_path / "c.jsonl") == 0
    assert (
        infer("--checkpoint", demo_text_run, "--input", DEMO_TEST, "--output", tmp_path / "u.jsonl", "--uncalibrated")
        == 0
    )
    calibrated, raw = read_jsonl(tmp_path / "c.jsonl"), read_jsonl(tmp_path / "u.jsonl")
    t = json.loads((demo_text_run / "run.json").read_text())["calibration"]["category"]["temperature"]
    assert sum(u["category"] is None for u in raw) < 20  # photo-only complaints give a text-only model no input
    for c, u in zip(calibrated, raw):
        assert c["category"] == u["category"]  # a temperature never changes the winner
        if u["category"] is None:
            continue
        logp = torch.tensor(list(u["category_probs"].values())).clamp(min=1e-6).log()
        expected = torch.softmax(logp / t, dim=-1)  # the raw logits up to a constant, rescaled
        assert list(c["category_probs"].values()) == pytest.approx(expected.tolist(), abs=2e-3)
    assert (
        infer(
            "--checkpoint",
            demo_text_run,
            "--input",
            DEMO_TEST,
            "--output",
            tmp_path / "o.jsonl",
            "--uncalibrated",
            "--backend",
            "onnxruntime",
        )
        == 2
    )


def test_rows_say_which_need_review_and_why(demo_text_run, tmp_path, capsys):
    run = json.loads((demo_text_run / "run.json").read_text())
    assert infer("--checkpoint", demo_text_run, "--input", DEMO_TEST, "--output", tmp_path / "p.jsonl") == 0
    out = capsys.readouterr().out
    rows = read_jsonl(tmp_path / "p.jsonl")
    band = {t: v["threshold"] for t, v in run["review"]["tasks"].items()}
    texts = {r["id"]: r["text"] for r in read_jsonl(DEMO_TEST / "complaints.jsonl")}
    assert any(not t.strip() for t in texts.values())  # the demo has photo-only complaints
    for row in rows:
        if row["status"] == "error":  # no input for a text-only model: no prediction to compare
            assert row["review_reasons"] == ["status error", "no text"] and row["category"] is None
            continue
        low = [t for t, th in band.items() if th is None or row[f"{t}_confidence"] < th]
        expected = (["no text"] if not texts[row["id"]].strip() else []) + low
        assert [r.split(":")[0] for r in row["review_reasons"]] == expected
        assert row["needs_review"] == bool(expected)
    auto = sum(not r["needs_review"] for r in rows)
    assert f"{auto} of 90 records auto-decided" in out
    meta = json.loads((tmp_path / "p.jsonl.meta.json").read_text())
    assert meta["review"]["needs_review"] == 90 - auto and meta["review"]["precision"] == 0.9
    coverage = {t: v["coverage"] for t, v in meta["review"]["tasks"].items()}
    for task, threshold in band.items():
        above = sum(threshold is not None and (r[f"{task}_confidence"] or 0) >= threshold for r in rows)
        assert coverage[task] == round(above / 90, 4)
    assert coverage["sentiment"] > 0.5  # the TF-IDF regression gets sentiment right: most of it is auto-decided

    assert (
        infer(
            "--checkpoint",
            demo_text_run,
            "--input",
            DEMO_TEST,
            "--output",
            tmp_path / "strict.jsonl",
            "--review-precision",
            "0.99",
        )
        == 0
    )
    strict = json.loads((tmp_path / "strict.jsonl.meta.json").read_text())["review"]["tasks"]
    assert all(strict[t]["coverage"] <= coverage[t] for t in coverage)
    assert any(strict[t]["coverage"] < coverage[t] for t in coverage)


def test_error_rows_and_empty_texts_always_need_review(demo_text_run, bad, tmp_path):
    folder, _ = bad
    band = ReviewBand(0.9, {}, set())
    assert band.reasons({"status": "ok"}, text_length=0) == ["no text"]
    assert infer("--checkpoint", demo_text_run, "--input", folder, "--output", tmp_path / "b.jsonl") == 0
    for row in read_jsonl(tmp_path / "b.jsonl"):
        if row["status"] != "ok":
            assert row["needs_review"] and f"status {row['status']}" in row["review_reasons"]


def test_a_run_from_before_calibration_still_predicts_raw(demo_text_run, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(demo_text_run, old)
    (old / "review.json").unlink()
    ckpt_path = next((old / "checkpoints").glob("best-*.ckpt"))
    ckpt = torch.load(ckpt_path, weights_only=True)
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("calibration.")}
    torch.save(ckpt, ckpt_path)
    assert infer("--checkpoint", ckpt_path, "--input", DEMO_TEST, "--output", tmp_path / "p.jsonl") == 0
    assert "holds no calibration" in capsys.readouterr().err
    assert (
        infer("--checkpoint", demo_text_run, "--input", DEMO_TEST, "--output", tmp_path / "u.jsonl", "--uncalibrated")
        == 0
    )
    old_rows, raw = read_jsonl(tmp_path / "p.jsonl"), read_jsonl(tmp_path / "u.jsonl")
    assert [r["category_probs"] for r in old_rows] == [r["category_probs"] for r in raw]


def test_the_numpy_clopper_pearson_bound_is_scipys():
    from scipy.special import betainc, betaincinv

    rng = np.random.default_rng(0)
    n = rng.integers(1, 20_000, size=2000)
    hits = np.minimum(n, rng.integers(0, 20_000, size=2000))
    a, b, x = np.maximum(hits, 1), n - hits + 1, rng.random(2000)
    assert np.abs(regularized_beta(a, b, x) - betainc(a, b, x)).max() < 1e-9
    for share in (0.5, 0.9, 0.95, 0.99):
        expected = (hits > 0) & (betaincinv(a, b, 0.05) >= share)
        assert np.array_equal(lower_bound_reaches(hits, n, share, 0.95), expected)
    for h, m in zip(hits[:50], n[:50]):
        assert lower_bound(int(h), int(m), 0.95) == pytest.approx(betaincinv(h, m - h + 1, 0.05) if h else 0, abs=1e-10)
