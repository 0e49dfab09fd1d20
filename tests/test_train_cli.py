"""train.py through the real LightningCLI, on a tiny demo archive made by data/make_demo.py."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torchmetrics.classification import MulticlassF1Score

from pipeline.data.labels import IGNORE_INDEX
from pipeline.models.complaint_model import DEEP_WEIGHTS
from pipeline.training.cli import ComplaintCLI
from pipeline.training.module import ComplaintClassifier

ROOT = Path(__file__).parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def data_args(tiny, test=False):
    return [
        "--data.train",
        str(tiny["train"]),
        "--data.val",
        str(tiny["val"]),
        "--data.test",
        str(tiny["test"]) if test else "null",
        "--data.num_workers",
        "0",
    ]


def cli(args):
    return ComplaintCLI(args=args)


def config_args(config: Path) -> list[str]:
    base = ["--config", str(ROOT / "configs" / "demo.yaml")]
    return base if config.name == "demo.yaml" else base + ["--config", str(config)]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_every_config_parses(config, capsys):
    with pytest.raises(SystemExit) as e:
        cli(["fit", *config_args(config), "--print_config"])
    assert e.value.code == 0
    assert "model:" in capsys.readouterr().out


def required_args(config: Path, request) -> list[str]:
    """What a config leaves for the user to give: a pretrained folder, a teacher run."""

    def lite0() -> list[str]:
        return ["--model.backbone_weights", str(request.getfixturevalue("lite0_weights")), "--data.image_size", "32"]

    if config.stem == "transformer":
        return ["--model.text_pretrained", str(request.getfixturevalue("tiny_bert_dir"))]
    if config.stem == "multimodal_teacher":
        return ["--model.text_pretrained", str(request.getfixturevalue("tiny_bert_dir")), *lite0()]
    if config.stem.startswith("distill"):
        return ["--model.teacher", str(request.getfixturevalue("trained_run"))]
    if config.stem == "multimodal_student":
        return ["--model.teacher", str(request.getfixturevalue("trained_run")), *lite0()]
    return []


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_fast_dev_run_every_config(config, tiny_demo, tmp_path, request):
    c = cli(
        [
            "fit",
            *config_args(config),
            *data_args(tiny_demo),
            *required_args(config, request),
            "--trainer.fast_dev_run",
            "true",
            "--runs_root",
            str(tmp_path),
        ]
    )
    assert c.trainer.state.finished
    assert (c.run_dir / "config.yaml").is_file() and (c.run_dir / "metrics.json").is_file()


def fit(tiny, tmp_path, *extra):
    return cli(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / "demo.yaml"),
            *data_args(tiny, test=True),
            "--trainer.max_epochs",
            "2",
            "--trainer.limit_train_batches",
            "2",
            "--trainer.log_every_n_steps",
            "1",
            "--runs_root",
            str(tmp_path),
            "--experiment",
            "t",
            *extra,
        ]
    )


def test_run_folder_checkpoint_reload_and_reproducibility(tiny_demo, tmp_path, capsys):
    c = fit(tiny_demo, tmp_path)
    run = c.run_dir
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"run: {run}"
    for name in (
        "config.yaml",
        "labels.json",
        "tokenizer/tokenizer.json",
        "metrics.json",
        "run.json",
        "learning_curves.png",
        "confusion_val_severity.png",
        "confusion_test_category.png",
        "checkpoints/last.ckpt",
        "csv/metrics.csv",
    ):
        assert (run / name).exists(), name
    assert list((run / "tensorboard").glob("events.*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"val", "test"} and set(metrics["val"]) == {"category", "sentiment", "severity"}
    info = json.loads((run / "run.json").read_text())
    assert info["seed"] == 42 and len(info["data_fingerprint"]) == 16 and info["versions"]["torch"]
    csv_header = (run / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "train/grad_norm" in csv_header and "val/severity_f1_macro" in csv_header

    # checkpoint -> load (weights_only) -> identical predictions
    best = Path(info["best_checkpoint"])
    loaded = ComplaintClassifier.load_from_checkpoint(best, weights_only=True).eval()
    batch = next(iter(c.datamodule.val_dataloader()))
    c.model.eval()
    with torch.no_grad():
        a, b = c.model(batch), loaded(batch)
    for task in a:
        torch.testing.assert_close(a[task], b[task])

    # same seed, same data -> same metrics
    again = fit(tiny_demo, tmp_path)
    assert json.loads((again.run_dir / "metrics.json").read_text()) == metrics


def test_resume_from_last(tiny_demo, tmp_path):
    first = fit(tiny_demo, tmp_path, "--trainer.max_epochs", "1")
    resumed = fit(tiny_demo, tmp_path, "--trainer.max_epochs", "2", "--ckpt_path", "last")
    assert resumed.run_dir == first.run_dir
    assert resumed.trainer.current_epoch == 2
    assert json.loads((first.run_dir / "run.json").read_text())["epochs"] == 2


def test_text_linear_blend_is_chosen_once_after_fit_and_the_network_is_what_training_watches(tiny_demo, tmp_path):
    c = fit(tiny_demo, tmp_path, "--model.text_linear", "true")
    metrics = json.loads((c.run_dir / "metrics.json").read_text())
    info = json.loads((c.run_dir / "run.json").read_text())
    loaded = ComplaintClassifier.load_from_checkpoint(info["best_checkpoint"], weights_only=True).eval()
    assert (loaded.model.text_linear.idf != 1).any()  # IDF from the training texts, kept in the checkpoint
    with torch.no_grad():
        outputs = [
            (loaded.forward_head(loaded.forward_features(b)[0]), loaded.model.linear_logits(b), b["labels"])
            for b in c.datamodule.val_dataloader()
        ]
    network_f1s, chosen_f1s = [], []
    for i, task in enumerate(loaded.tasks):

        def f1(weight: float, task: str = task) -> float:
            w = torch.full_like(loaded.model.deep_weight, weight)
            preds = torch.cat([loaded.model.blend(deep, linear, w)[task].argmax(1) for deep, linear, _ in outputs])
            target = torch.cat([labels[task] for _, _, labels in outputs])
            n = len(loaded.facts.task_classes[task])
            return MulticlassF1Score(n, average="macro", ignore_index=IGNORE_INDEX)(preds, target).item()

        scores = {w: f1(w) for w in DEEP_WEIGHTS}
        reported = metrics["val"][task]
        chosen = reported["deep_weight"]
        assert float(loaded.model.deep_weight[i]) == chosen == info["deep_weight"][task]
        assert scores[chosen] == pytest.approx(max(scores.values()))
        assert reported["f1_macro"] == pytest.approx(scores[chosen])
        assert reported["network"]["f1_macro"] == pytest.approx(scores[1.0])
        assert reported["tfidf"]["f1_macro"] == pytest.approx(scores[0.0])
        assert set(metrics["test"][task]) >= {"f1_macro", "network", "tfidf", "deep_weight"}
        network_f1s.append(scores[1.0])
        chosen_f1s.append(scores[chosen])
    # checkpointing watched the network alone, not the blend (which scores differently here)
    assert info["best_score"] == pytest.approx(sum(network_f1s) / len(network_f1s), abs=1e-6)
    assert abs(sum(chosen_f1s) - sum(network_f1s)) > 0.01
    last = torch.load(c.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert torch.equal(last["state_dict"]["model.deep_weight"], torch.ones(len(loaded.tasks)))  # saved in the fit


def run_train(*args, timeout=600):
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def refused(capsys, *args) -> str:
    """``train.py``'s main in this process on arguments it must refuse: what it printed to stderr."""
    from pipeline.training.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(ROOT / "configs" / "demo.yaml"), *args])
    assert stop.value.code != 0
    return capsys.readouterr().err


def test_unknown_key_names_the_nearest(capsys):
    assert "did you mean 'model.lr'" in refused(capsys, "--model.lrr", "0.1")


def test_wrong_type_is_an_error(capsys):
    assert "max_epochs" in refused(capsys, "--trainer.max_epochs", "three")


def test_lightning_default_root_dir_holds_the_run_folders_and_may_not_contradict_runs_root(tiny_demo, tmp_path, capsys):
    args = ["fit", *config_args(ROOT / "configs" / "text_only.yaml")]
    short = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", *data_args(tiny_demo)]
    run_dir = cli([*args, *short, "--trainer.default_root_dir", str(tmp_path / "lightning")]).run_dir
    assert run_dir.parent == tmp_path / "lightning" / "text_only"
    assert (run_dir / "checkpoints").is_dir()
    error = refused(capsys, "--trainer.default_root_dir", str(tmp_path / "a"), "--runs_root", str(tmp_path / "b"))
    assert "give --runs_root alone" in error and "default_root_dir" in error


def test_ddp_two_processes_on_cpu(tiny_demo, tmp_path):
    """Two processes, one run folder; an image backbone frozen for the first epoch (no gradients then) trains
    in the second, under plain ``ddp``."""
    out = run_train(
        "fit",
        "--config",
        "configs/demo.yaml",
        *data_args(tiny_demo),
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.accelerator=cpu",
        "--trainer.max_epochs",
        "2",
        "--trainer.limit_train_batches",
        "2",
        "--model.freeze_backbone_epochs",
        "1",
        "--runs_root",
        str(tmp_path),
        "--experiment",
        "ddp",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "world_size: 2" in out.stderr or "distributed_backend=gloo" in out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("run: ")
    run = Path(last[5:])
    run = run if run.is_absolute() else ROOT / run
    assert (run / "metrics.json").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert len(list((tmp_path / "ddp").iterdir())) == 1  # both processes wrote into one run folder
    assert "image backbone: trains from epoch 1" in out.stdout + out.stderr
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["strategy"] == "ddp_find_unused_parameters_true"
