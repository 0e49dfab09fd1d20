import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if "PYTEST_XDIST_WORKER" in os.environ:  # `make test` runs two workers: one torch thread each (and in the
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # train.py runs they start), not two spinning threads per core
sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402

from factory import (  # noqa: E402
    bad_archive,
    lite0_published_state,
    make_demo_module,
    pretrained_image_args,
    tiny_bert,
)

# The files that take longest (pytest --durations=0, summed per file), slowest first; the sweep's, whose worker
# processes would crowd the Ray cluster's, after the other heavy ones. `make test` gives whole
# files to two workers in collection order (--dist loadfile --no-loadscope-reorder): starting with these and
# ending with the quick ones keeps either worker from finishing long before the other.
SLOWEST_FIRST = [
    "test_ray_engine.py",
    "test_train_cli.py",
    "test_hardening.py",
    "test_infer.py",
    "test_distillation.py",
    "test_sweep.py",
    "test_bombs.py",
    "test_explain.py",
    "test_serve.py",
    "test_export.py",
    "test_pretrained_image.py",
    "test_calibration.py",
    "test_transformer.py",
    "test_multilabel.py",
    "test_review_queue.py",
    "test_real_exports.py",
]


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        name = item.path.name
        return SLOWEST_FIRST.index(name) if name in SLOWEST_FIRST else len(SLOWEST_FIRST)

    items.sort(key=rank)  # stable: each file keeps its own order


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    # Fitted vocabularies are cached by fingerprint; keep the tests' cache out of ~/.cache.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def bad(tmp_path_factory):
    """The archive with every bad-attachment case: (folder, {id: expected reason})."""
    return bad_archive(tmp_path_factory.mktemp("badcase"))


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """A 60-complaint demo archive (train/val/test) made by data/make_demo.py."""
    return make_demo_module().build(tmp_path_factory.mktemp("tiny") / "demo", records=60, seed=7)


@pytest.fixture(scope="session")
def tiny_bert_dir(tiny_demo, tmp_path_factory):
    """A random 2-layer BERT folder with a WordPiece tokenizer of the tiny demo's texts (no download)."""
    import json

    texts = [json.loads(line)["text"] for line in open(tiny_demo["train"] / "complaints.jsonl", encoding="utf-8")]
    return tiny_bert(tmp_path_factory.mktemp("tiny_bert"), texts)


@pytest.fixture(scope="session")
def trained_run(tiny_demo, tmp_path_factory):
    """A run folder from a short real training on the tiny demo (shared by the inference tests)."""
    from pipeline.training.cli import ComplaintCLI

    root = Path(__file__).parents[1]
    cli = ComplaintCLI(
        args=[
            "fit",
            "--config",
            str(root / "configs" / "demo.yaml"),
            "--data.train",
            str(tiny_demo["train"]),
            "--data.val",
            str(tiny_demo["val"]),
            "--data.test",
            "null",
            "--data.num_workers",
            "0",
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "2",
            "--runs_root",
            str(tmp_path_factory.mktemp("runs")),
        ]
    )
    return cli.run_dir


@pytest.fixture(scope="session")
def demo_text_run(tmp_path_factory):
    """A text-only run on the committed demo archive (420 train, 90 val, 90 test), one epoch: the TF-IDF
    regression beside the network makes it good enough to compare and calibrate."""
    from pipeline.training.cli import ComplaintCLI

    root = Path(__file__).parents[1]
    cli = ComplaintCLI(
        args=[
            "fit",
            "--config",
            str(root / "configs" / "demo.yaml"),
            "--config",
            str(root / "configs" / "text_only.yaml"),
            *[
                x
                for split in ("train", "val", "test")
                for x in (f"--data.{split}", str(root / "data" / "demo" / split))
            ],
            "--data.num_workers",
            "0",
            "--trainer.max_epochs",
            "1",
            "--runs_root",
            str(tmp_path_factory.mktemp("runs")),
        ]
    )
    return cli.run_dir


@pytest.fixture(scope="session")
def lite0_weights(tmp_path_factory):
    """Random EfficientNet-Lite0 weights in the published file's key layout (tests never need the real ones)."""
    import torch

    path = tmp_path_factory.mktemp("lite0") / "efficientnet-lite0-random.pth"
    torch.save(lite0_published_state(), path)
    return path


@pytest.fixture(scope="session")
def lite0_run(tiny_demo, lite0_weights, tmp_path_factory):
    """A multimodal demo run with README's pretrained-image recipe (Lite0 from ``lite0_weights``) at 32 pixels:
    the backbone frozen in epoch 0, trained in epoch 1."""
    from pipeline.training.cli import ComplaintCLI

    cli = ComplaintCLI(
        args=[
            "fit",
            *pretrained_image_args(tiny_demo, lite0_weights),
            "--trainer.max_epochs",
            "2",
            "--trainer.limit_train_batches",
            "2",
            "--runs_root",
            str(tmp_path_factory.mktemp("runs")),
        ]
    )
    return cli.run_dir
