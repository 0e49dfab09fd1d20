"""Multi-label tasks scored where users look: infer.py --evaluate and python -m pipeline.compare."""

from __future__ import annotations

import json
import random

import pytest
from sklearn.metrics import accuracy_score, f1_score, hamming_loss, precision_recall_fscore_support
from sklearn.preprocessing import MultiLabelBinarizer

from factory import ROOT, infer, read_jsonl, write_manifest
from pipeline.tools.compare import main as compare

TAGS = {"late": "parcel late courier delay", "damaged": "broken cracked damaged box", "refund": "money back refund"}


def fit(archive, runs, *extra: str):
    from pipeline.training.cli import ComplaintCLI

    return ComplaintCLI(
        args=[
            "fit",
            "--config",
            str(ROOT / "configs" / "demo.yaml"),
            "--config",
            str(ROOT / "configs" / "text_only.yaml"),
            "--data.train",
            str(archive),
            "--data.val",
            str(archive),
            "--data.test",
            "null",
            "--data.num_workers",
            "0",
            "--data.tasks",
            '[{"name": "tags", "column": "tags", "type": "multilabel"}, {"name": "kind", "column": "kind"}]',
            "--trainer.max_epochs",
            "1",
            "--runs_root",
            str(runs),
            *extra,
        ]
    ).run_dir


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    """An archive whose records carry one or two tags (as "a;b" strings and as lists), and a text-only run
    trained on it: (archive, run folder)."""
    rng = random.Random(0)
    records = []
    for i in range(160):
        tags = sorted(rng.sample(list(TAGS), rng.randint(1, 2)))
        words = " ".join(TAGS[t] for t in tags).split()
        rng.shuffle(words)
        text = " ".join(words[: max(3, len(words) - 2)]) + f" order {i}"
        records.append(
            {
                "id": f"m{i}",
                "text": text,
                "tags": ";".join(tags) if i % 2 else tags,
                "kind": "loud" if "damaged" in tags else "quiet",
            }
        )
    archive = tmp_path_factory.mktemp("tagged") / "archive"
    write_manifest(archive, records)
    return archive, fit(archive, tmp_path_factory.mktemp("runs"))


def test_evaluate_scores_a_multilabel_task_as_scikit_learn_does(tagged, tmp_path, capsys):
    archive, run = tagged
    out = tmp_path / "pred.jsonl"
    assert infer("--checkpoint", run, "--input", archive, "--output", out, "--evaluate") == 0
    printed = capsys.readouterr().out
    rows = read_jsonl(out)
    assert all(isinstance(r["tags_true"], list) for r in rows)  # "a;b" and ["a", "b"] alike
    result = json.loads(out.with_name(out.name + ".metrics.json").read_text())["tags"]
    binarizer = MultiLabelBinarizer(classes=result["labels"])
    true, said = binarizer.fit_transform([r["tags_true"] for r in rows]), binarizer.transform([r["tags"] for r in rows])
    occurring = [i for i in range(len(result["labels"])) if true[:, i].any() or said[:, i].any()]
    assert result["records"] == len(rows) == 160
    assert result["subset_acc"] == pytest.approx(accuracy_score(true, said))
    assert result["hamming_loss"] == pytest.approx(hamming_loss(true, said))
    assert result["f1_micro"] == pytest.approx(f1_score(true, said, average="micro", zero_division=0))
    assert result["f1_macro"] == pytest.approx(f1_score(true, said, average="macro", labels=occurring, zero_division=0))
    precision, recall, f1, support = precision_recall_fscore_support(true, said, average=None, zero_division=0)
    for i, label in enumerate(result["labels"]):
        got = result["per_label"][label]
        assert [got["precision"], got["recall"], got["f1"], got["support"]] == pytest.approx(
            [precision[i], recall[i], f1[i], support[i]]
        )
        assert got["tp"] + got["fp"] + got["fn"] + got["tn"] == 160
    assert 0 < result["f1_micro"] <= 1 and "kind" in json.loads(out.with_name(out.name + ".metrics.json").read_text())
    meta = json.loads(out.with_name(out.name + ".meta.json").read_text())
    assert meta["evaluation"]["tags"]["f1_micro"] == result["f1_micro"]
    assert out.with_name(out.name + ".confusion_tags.png").is_file()
    assert f"evaluate tags: subset accuracy {result['subset_acc']:.3f}  micro-F1" in printed


def test_compare_gives_multilabel_intervals_and_a_verdict(tagged, tmp_path, capsys):
    archive, run = tagged
    a = tmp_path / "a.jsonl"
    assert infer("--checkpoint", run, "--input", archive, "--output", a, "--evaluate") == 0
    assert compare([str(a), str(a), "--output", str(tmp_path / "same")]) == 3
    same = json.loads((tmp_path / "same" / "compare.json").read_text())["tasks"]["tags"]
    assert same["type"] == "multilabel" and same["verdict"] == "neither" and same["mcnemar"]["p_value"] == 1
    for name in ("accuracy", "f1_micro", "f1_macro"):
        assert (
            same[name]["difference_ci"] == [0.0, 0.0]
            and same[name]["a_ci"][0] <= same[name]["a"] <= same[name]["a_ci"][1]
        )

    rows = read_jsonl(a)  # B: the same model, but it says no tag where A was right
    for r in rows:
        if r["tags"] == r["tags_true"]:
            r["tags"] = []
    b = tmp_path / "b.jsonl"
    b.write_text("".join(json.dumps(r) + "\n" for r in rows))
    capsys.readouterr()
    assert compare([str(a), str(b), "--output", str(tmp_path / "worse")]) == 1
    worse = json.loads((tmp_path / "worse" / "compare.json").read_text())["tasks"]["tags"]
    assert worse["verdict"] == "B worse" and worse["mcnemar"]["p_value"] < 0.01
    assert worse["f1_micro"]["difference_ci"][1] < 0 and worse["accuracy"]["b"] == 0.0
    assert "micro-F1" in capsys.readouterr().out
    assert compare([str(b), str(a)]) == 0


def test_compare_gives_two_multilabel_runs_intervals_and_a_verdict(tagged, tmp_path, capsys):
    archive, run = tagged
    assert compare([str(run), str(run), "--input", str(archive)]) == 3  # a run against itself
    other = fit(archive, tmp_path / "runs", "--seed_everything", "7", "--model.text_linear", "false")
    status = compare([str(run), str(other), "--input", str(archive), "--output", str(tmp_path / "ab")])
    result = json.loads((tmp_path / "ab" / "compare.json").read_text())
    tags = result["tasks"]["tags"]
    assert tags["type"] == "multilabel" and tags["records"] == 160
    for name in ("accuracy", "f1_micro", "f1_macro"):
        m = tags[name]
        assert m["a_ci"][0] <= m["a"] <= m["a_ci"][1] and m["b_ci"][0] <= m["b"] <= m["b_ci"][1]
        assert m["difference_ci"][0] <= m["difference"] <= m["difference_ci"][1]
    assert tags["verdict"] in ("B better", "B worse", "neither") and 0 <= tags["mcnemar"]["p_value"] <= 1
    assert status == {"B better": 0, "B worse": 1, "neither": 3}[result["verdict"]]
    assert "tags (160 labelled records)" in capsys.readouterr().out
