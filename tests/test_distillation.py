"""Distillation: the loss, augmentation, teacher logits cached once, embeddings_from, and a student that
learns from a teacher what its own labels never showed it."""

import json
import math
import random
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from factory import tiny_bert, write_manifest
from pipeline.data.augment import MAX_NGRAM, UNIT, augmented_copy
from pipeline.data.records import Record
from pipeline.data.text import load_tokenizer
from pipeline.inference.analyzer import ComplaintAnalyzer
from pipeline.models.pretrained_embeddings import pretrained_input_embeddings, project_embeddings
from pipeline.training.cli import ComplaintCLI
from pipeline.training.module import ComplaintClassifier
from pipeline.training.teacher import Teacher
from pipeline.training.teacher_comparison import distillation_set_lines

ROOT = Path(__file__).parents[1]


# -- loss --


def lit(
    alpha: float, temperature: float = 2.0, multilabel=(), loss: str = "kl", task_temperatures=None
) -> ComplaintClassifier:
    torch.manual_seed(0)
    return ComplaintClassifier.from_keys(
        vocab_size=40,
        task_classes={"cat": ["a", "b", "c"], "tags": ["x", "y"]},
        multilabel_tasks=list(multilabel),
        modalities=["text"],
        text_linear=False,
        embed_dim=8,
        text_hidden=8,
        fusion_dim=8,
        fusion_heads=2,
        modality_dropout=0.0,
        teacher="some/run",
        distill_alpha=alpha,
        distill_temperature=temperature,
        distill_task_temperatures=task_temperatures or {},
        distill_loss=loss,
    ).eval()


def distill_batch(multilabel: bool) -> dict:
    g = torch.Generator().manual_seed(1)
    return {
        "text_ids": torch.randint(1, 40, (4, 6), generator=g),
        "text_lengths": torch.tensor([6, 4, 3, 5]),
        "images": torch.zeros(4, 1, 3, 8, 8, dtype=torch.uint8),
        "image_mask": torch.zeros(4, 1, dtype=torch.bool),
        "videos": torch.zeros(4, 1, 1, 3, 8, 8, dtype=torch.uint8),
        "video_mask": torch.zeros(4, 1, dtype=torch.bool),
        "ids": ["1", "2", "3", "4"],
        "labels": {
            "cat": torch.tensor([0, 2, -100, 1]),
            "tags": torch.tensor([[1.0, 0], [0, 1], [-1, -1], [1, 1]]) if multilabel else torch.tensor([1, 0, 1, -100]),
        },
        "teacher_logits": {"cat": torch.randn(4, 3, generator=g) * 3, "tags": torch.randn(4, 2, generator=g) * 3},
    }


def hand_kl(teacher: torch.Tensor, student: torch.Tensor, T: float, bernoulli: bool) -> float:
    """KL(teacher || student) at temperature T, computed element by element in float64."""
    total = 0.0
    for t_row, s_row in zip(teacher.double().tolist(), student.double().tolist()):
        if bernoulli:
            for t, s in zip(t_row, s_row):
                p, q = 1 / (1 + math.exp(-t / T)), 1 / (1 + math.exp(-s / T))
                total += (p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))) / len(t_row)
        else:
            zp, zq = sum(math.exp(t / T) for t in t_row), sum(math.exp(s / T) for s in s_row)
            for t, s in zip(t_row, s_row):
                p, q = math.exp(t / T) / zp, math.exp(s / T) / zq
                total += p * math.log(p / q)
    return total / len(teacher)


@pytest.mark.parametrize("multilabel", [False, True])
def test_loss_is_plain_ce_at_alpha_1_and_kl_only_at_alpha_0(multilabel):
    b = distill_batch(multilabel)
    tasks = ["tags"] if multilabel else []
    with torch.no_grad():
        logits = lit(1.0, multilabel=tasks).forward_head(lit(1.0, multilabel=tasks).forward_features(b)[0])
        hard = F.cross_entropy(logits["cat"], b["labels"]["cat"], ignore_index=-100)
        if multilabel:
            known = b["labels"]["tags"] >= 0
            hard = hard + F.binary_cross_entropy_with_logits(logits["tags"][known], b["labels"]["tags"][known])
        else:
            hard = hard + F.cross_entropy(logits["tags"], b["labels"]["tags"], ignore_index=-100)
        assert lit(1.0, multilabel=tasks).training_loss(b).item() == pytest.approx(hard.item(), rel=1e-6)

        T = 3.0
        kl = sum(hand_kl(b["teacher_logits"][t], logits[t], T, t in tasks) for t in ("cat", "tags"))
        assert lit(0.0, T, tasks).training_loss(b).item() == pytest.approx(T * T * kl, rel=1e-5)
        mixed = lit(0.25, T, tasks).training_loss(b).item()
        assert mixed == pytest.approx(0.25 * hard.item() + 0.75 * T * T * kl, rel=1e-5)
        del b["teacher_logits"]  # a batch without a teacher: the hard-label loss whatever alpha is
        assert lit(0.0, T, tasks).training_loss(b).item() == pytest.approx(hard.item(), rel=1e-6)


def test_a_task_of_its_own_temperature_is_softened_at_it_and_the_others_at_the_common_one():
    b = distill_batch(False)
    with torch.no_grad():
        logits = lit(0.0).forward_head(lit(0.0).forward_features(b)[0])
        by_hand = 16 * hand_kl(b["teacher_logits"]["cat"], logits["cat"], 4.0, False) + 4 * hand_kl(
            b["teacher_logits"]["tags"], logits["tags"], 2.0, False
        )
        loss = lit(0.0, 2.0, task_temperatures={"cat": 4.0}).training_loss(b).item()
        assert loss == pytest.approx(by_hand, rel=1e-5)
        assert loss != pytest.approx(lit(0.0, 2.0).training_loss(b).item(), rel=1e-3)
    with pytest.raises(ValueError, match="distill_task_temperatures names task 'kind'; tasks are"):
        lit(0.0, task_temperatures={"kind": 4.0})
    with pytest.raises(ValueError, match="positive temperatures"):
        lit(0.0, task_temperatures={"cat": 0.0})


@pytest.mark.parametrize("multilabel", [False, True])
def test_mse_loss_is_the_mean_squared_difference_of_the_logits(multilabel):
    b = distill_batch(multilabel)
    tasks = ["tags"] if multilabel else []
    with torch.no_grad():
        logits = lit(0.0, multilabel=tasks).forward_head(lit(0.0, multilabel=tasks).forward_features(b)[0])
        by_hand = sum(
            ((b["teacher_logits"][t].double() - logits[t].double()) ** 2).mean().item() for t in ("cat", "tags")
        )
        for T in (1.0, 4.0):  # the temperature plays no part
            assert lit(0.0, T, tasks, loss="mse").training_loss(b).item() == pytest.approx(by_hand, rel=1e-5)
        b["teacher_logits"] = {t: logits[t].clone() for t in ("cat", "tags")}
        assert lit(0.0, multilabel=tasks, loss="mse").training_loss(b).item() == pytest.approx(0.0, abs=1e-10)
    with pytest.raises(ValueError, match="distill_loss 'l1' is not one of"):
        lit(0.0, loss="l1")


# -- augmentation --


def test_augmentation_is_deterministic_per_seed_and_the_same_for_every_mask_token():
    text = "the courier left my parcel in the rain and 包裹 全 湿 了 so I want a refund now " * 3
    record = Record("r1", text, ["media/a.jpg"], {"category": "delivery"}, "test:line 1")
    copies = [augmented_copy(record, k, seed=7, mask_token="[MASK]") for k in range(1, 30)]
    assert copies == [augmented_copy(record, k, seed=7, mask_token="[MASK]") for k in range(1, 30)]
    assert [c.text for c in copies] != [
        augmented_copy(record, k, seed=8, mask_token="[MASK]").text for k in range(1, 30)
    ]
    assert all(
        c.labels == {} and c.attachments == ["media/a.jpg"] and c.id == f"r1~{k}" for k, c in enumerate(copies, 1)
    )
    other = [augmented_copy(record, k, seed=7, mask_token="[UNK]").text for k in range(1, 30)]
    assert [t.replace("[UNK]", "[MASK]") for t in other] == [c.text for c in copies]
    units = UNIT.findall(text)
    masked = [c.text.split() for c in copies if len(c.text.split()) == len(units)]
    sampled = [c.text.split() for c in copies if len(c.text.split()) < len(units)]
    assert masked and sampled  # both rules fire in 29 copies
    assert all(len(s) <= MAX_NGRAM for s in sampled)
    rate = sum(u == "[MASK]" for m in masked for u in m) / sum(len(m) for m in masked)
    assert 0.03 < rate < 0.2  # MASK_PROB is 0.1
    assert UNIT.findall("退货 no refund,退款") == ["退", "货", "no", "refund,", "退", "款"]  # a unit per CJK character


def test_distillation_set_is_deterministic_per_distill_seed(tiny_demo, trained_run, monkeypatch):
    from pipeline.data.datamodule import ComplaintDataModule
    from pipeline.data.labels import Task

    def texts(seed: int, training_seed: int = 1) -> list[str]:
        monkeypatch.setenv("PL_GLOBAL_SEED", str(training_seed))
        dm = ComplaintDataModule.from_keys(
            train=str(tiny_demo["train"]),
            val=str(tiny_demo["val"]),
            num_workers=0,
            tasks=[Task("category", "category")],
            teacher=str(trained_run),
            unlabeled=[str(tiny_demo["test"])],
            distill_augment=2,
            distill_seed=seed,
        )
        records, archives = dm.distillation_set("[UNK]")
        with_text = sum(bool(r.text) for r in dm.splits["train"] + dm.splits["unlabeled0"])
        assert len(records) == len(dm.splits["train"]) + len(dm.splits["unlabeled0"]) + 2 * with_text
        assert archives[-1] is dm.archives["unlabeled0"] and archives[0] is dm.archives["train"]
        assert all(not r.labels for r in records[len(dm.splits["train"]) :])
        return [r.text for r in records]

    assert texts(3) == texts(3)
    assert texts(3) != texts(4)
    assert texts(3, training_seed=1) == texts(3, training_seed=2)  # student seeds share the teacher's labels


# -- teacher logits --


def fit(args: list[str]) -> ComplaintCLI:
    return ComplaintCLI(args=["fit", *args])


def test_teacher_logits_are_computed_once_and_cached_in_the_run(tiny_demo, trained_run, tmp_path, monkeypatch):
    calls = []
    original = Teacher.logits

    def counted(self, records, *args, **kwargs):
        if any("~" in r.id for r in records):  # the distillation set (the summary's comparison scores val too)
            calls.append(len(records))
        return original(self, records, *args, **kwargs)

    monkeypatch.setattr(Teacher, "logits", counted)
    args = [
        "--config",
        str(ROOT / "configs" / "demo.yaml"),
        "--config",
        str(ROOT / "configs" / "distill.yaml"),
        "--model.teacher",
        str(trained_run),
        "--data.train",
        str(tiny_demo["train"]),
        "--data.val",
        str(tiny_demo["val"]),
        "--data.test",
        "null",
        "--data.num_workers",
        "0",
        "--data.distill_augment",
        "1",
        "--trainer.limit_train_batches",
        "2",
        "--runs_root",
        str(tmp_path),
        "--experiment",
        "student",
    ]
    c = fit([*args, "--trainer.max_epochs", "2"])
    assert len(calls) == 1 and c.trainer.current_epoch == 2
    cache = c.run_dir / "teacher_logits.pt"
    saved = torch.load(cache, weights_only=True)["logits"]
    train = c.datamodule.splits["train"]
    assert calls[0] == len(c.datamodule.datasets["train"]) == len(train) + sum(bool(r.text) for r in train)

    # the cached logits are the teacher's own outputs on the records, in order
    teacher = ComplaintAnalyzer.from_checkpoint(trained_run, calibrated=False)  # teachers teach raw logits
    records = list(teacher.predict(tiny_demo["train"]))[:3]
    for i, row in enumerate(records):
        probs = torch.softmax(saved["severity"][i], dim=0)
        expected = torch.tensor(list(row["severity_probs"].values()))
        torch.testing.assert_close(probs, expected, atol=1e-5, rtol=0)

    # resuming reads them back from the run, and a new run on the same records from the shared cache
    resumed = fit([*args, "--trainer.max_epochs", "3", "--ckpt_path", "last"])
    assert resumed.run_dir == c.run_dir and len(calls) == 1 and resumed.trainer.current_epoch == 3
    again = fit([*args, "--trainer.max_epochs", "1"])
    assert again.run_dir != c.run_dir and len(calls) == 1
    assert torch.equal(
        torch.load(again.run_dir / "teacher_logits.pt", weights_only=True)["logits"]["severity"], saved["severity"]
    )


def test_fits_at_once_on_the_same_records_compute_the_teacher_logits_once(trained_run, tmp_path, monkeypatch):
    """A sweep's first trials start together: the second waits for the first's logits instead of computing them
    again (each fit opens the lock file itself, as another process would)."""
    calls = []
    original = Teacher.logits

    def slow(self, records, *args, **kwargs):
        calls.append(len(records))
        time.sleep(0.5)  # long enough for the other fit to arrive while these are computed
        return original(self, records, *args, **kwargs)

    monkeypatch.setattr(Teacher, "logits", slow)
    records = [Record(f"r{i}", f"the parcel came late, the {i}th time", [], {}, f"test {i}") for i in range(8)]
    teacher = Teacher(trained_run)
    with ThreadPoolExecutor(2) as pool:
        results = list(
            pool.map(lambda run: teacher.cached_logits(records, [None] * 8, tmp_path / "cache", tmp_path / run), "ab")
        )
    assert calls == [8]
    assert torch.equal(results[0]["severity"], results[1]["severity"])
    assert (tmp_path / "a").is_file() and (tmp_path / "b").is_file()


# -- embeddings_from --


def test_embeddings_from_copies_the_rows_of_shared_tokens(tiny_bert_dir):
    source_vocab, matrix = pretrained_input_embeddings(tiny_bert_dir)
    known = sorted(t for t in source_vocab if not t.startswith("["))
    random.Random(0).shuffle(known)  # the same tokens at other rows, and tokens the pretrained model lacks
    own = {token: i for i, token in enumerate(["[PAD]", "[UNK]", *known[:100], *(f"zz{k}" for k in range(30))])}
    shared = [t for t in own if t in source_vocab]

    torch.manual_seed(0)
    model = ComplaintClassifier.from_keys(
        vocab_size=len(own),
        task_classes={"c": ["a", "b"]},
        modalities=["text"],
        embed_dim=16,
        embeddings_from=str(tiny_bert_dir),
    )
    embedding = model.model.text_encoder.embedding
    before = embedding.weight.detach().clone()
    assert model.init_embeddings(own) == len(shared)
    reduced = project_embeddings(matrix, 16)  # 32 pretrained dimensions down to 16
    for token in shared:
        expected = 0 * reduced[0] if token == "[PAD]" else reduced[source_vocab[token]]  # padding stays zero
        torch.testing.assert_close(embedding.weight[own[token]], expected)
    for token, i in own.items():
        if token not in source_vocab and i != embedding.padding_idx:
            assert torch.equal(embedding.weight[i], before[i])
    assert embedding.weight[embedding.padding_idx].abs().sum() == 0


def test_project_embeddings_is_pca_scaled_to_unit_variance():
    torch.manual_seed(0)
    matrix = torch.randn(500, 12) @ torch.randn(12, 12) + 3.0
    reduced = project_embeddings(matrix, 5)
    assert reduced.shape == (500, 5) and reduced.std().item() == pytest.approx(1.0, rel=1e-4)
    cov = torch.cov(reduced.T)
    assert (cov - torch.diag(torch.diag(cov))).abs().max() < 1e-3  # principal components are uncorrelated
    variances = torch.diag(cov)
    assert torch.all(variances[:-1] >= variances[1:])  # in order of variance kept
    full = project_embeddings(matrix, 12)
    torch.testing.assert_close(full, (matrix - matrix.mean(0)) / (matrix - matrix.mean(0)).std())
    with pytest.raises(ValueError, match="embed_dim=13 is larger"):
        project_embeddings(matrix, 13)


def test_embeddings_from_brings_its_tokenizer_through_train_py(tiny_demo, tiny_bert_dir, tmp_path, caplog):
    c = fit(
        [
            "--config",
            str(ROOT / "configs" / "demo.yaml"),
            "--config",
            str(ROOT / "configs" / "text_only.yaml"),
            "--model.embeddings_from",
            str(tiny_bert_dir),
            "--model.embed_dim",
            "32",
            "--data.train",
            str(tiny_demo["train"]),
            "--data.val",
            str(tiny_demo["val"]),
            "--data.test",
            "null",
            "--data.num_workers",
            "0",
            "--trainer.fast_dev_run",
            "true",
            "--runs_root",
            str(tmp_path),
        ]
    )
    vocab = load_tokenizer(tiny_bert_dir).get_vocab()
    assert load_tokenizer(c.run_dir / "tokenizer").get_vocab() == vocab
    assert f"embeddings_from: {len(vocab)} of {len(vocab)} token rows" in caplog.text


def test_student_of_a_transformer_reads_its_tokens_and_the_summary_sets_it_beside_teacher_and_floor(
    tiny_demo, tiny_bert_dir, tmp_path, caplog, capsys
):
    data = [
        "--config",
        str(ROOT / "configs" / "demo.yaml"),
        "--config",
        str(ROOT / "configs" / "text_only.yaml"),
        "--data.train",
        str(tiny_demo["train"]),
        "--data.val",
        str(tiny_demo["val"]),
        "--data.test",
        str(tiny_demo["test"]),
        "--data.num_workers",
        "0",
        "--trainer.max_epochs",
        "1",
        "--runs_root",
        str(tmp_path),
    ]
    teacher = fit(
        [
            *data,
            "--config",
            str(ROOT / "configs" / "transformer.yaml"),
            "--model.text_pretrained",
            str(tiny_bert_dir),
            "--model.text_linear",
            "false",
        ]
    ).run_dir
    capsys.readouterr()
    student = fit(
        [
            *data,
            "--config",
            str(ROOT / "configs" / "distill.yaml"),
            "--model.teacher",
            str(teacher),
            "--model.embed_dim",
            "32",
            "--data.distill_augment",
            "1",
        ]
    )  # embeddings_from: teacher
    vocab = load_tokenizer(tiny_bert_dir).get_vocab()
    assert load_tokenizer(student.run_dir / "tokenizer").get_vocab() == vocab
    assert f"embeddings_from: {len(vocab)} of {len(vocab)} token rows from {tiny_bert_dir}" in caplog.text

    info = json.loads((student.run_dir / "run.json").read_text())["distillation"]
    student_metrics = json.loads((student.run_dir / "metrics.json").read_text())
    teacher_metrics = json.loads((teacher / "metrics.json").read_text())
    for split in ("val", "test"):
        for task in ("category", "sentiment", "severity"):
            row, mine = info[split][task], student_metrics[split][task]
            # the teacher's score on the student's records is its own run's (calibration keeps the argmax)
            assert row["teacher"] == pytest.approx(teacher_metrics[split][task]["f1_macro"], abs=1e-4)
            assert (row["student_network"], row["student"], row["floor"]) == (
                mine["network"]["f1_macro"],
                mine["f1_macro"],
                mine["tfidf"]["f1_macro"],
            )
    out = capsys.readouterr().out
    assert f"distillation from {teacher}" in out
    r = info["test"]["mean"]
    assert (
        f"test mean: student network {r['student_network']:.3f} ({r['student_network'] - r['teacher']:+.3f} vs "
        f"teacher), student blend {r['student']:.3f}, teacher {r['teacher']:.3f}, floor (TF-IDF) {r['floor']:.3f}"
    ) in out


def test_embeddings_from_teacher_needs_a_teacher(tiny_demo, tmp_path):
    with pytest.raises(ValueError, match="embeddings_from=teacher: set model.teacher"):
        fit(
            [
                "--config",
                str(ROOT / "configs" / "demo.yaml"),
                "--model.embeddings_from",
                "teacher",
                "--data.train",
                str(tiny_demo["train"]),
                "--runs_root",
                str(tmp_path),
            ]
        )


# -- a Chinese teacher, from a folder published with pytorch_model.bin, mixed with English words --

CHINESE = {
    "negative": ["外卖送得太慢了", "我的{brand}屏幕坏了", "客服不理人", "{app}一直闪退"],
    "positive": ["送餐很快味道不错", "{brand}包装完好", "客服态度很好", "{app}用起来很方便"],
}


def chinese_records(n: int, seed: int, prefix: str) -> list[dict]:
    """Short Chinese complaints with English brand and product words, in the cases people type them."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = "negative" if i % 2 else "positive"
        text = rng.choice(CHINESE[label]).format(
            brand=rng.choice(["iPhone", "IPHONE", "iphone"]), app=rng.choice(["APP", "App"])
        )
        out.append({"id": f"{prefix}{i}", "text": text + rng.choice(["", "！", "，GPU也很烫"]), "label": label})
    return out


def test_a_chinese_folder_with_pytorch_model_bin_only_teaches_a_student_that_reads_its_english_words(tmp_path, caplog):
    splits = {split: chinese_records(n, seed, split) for split, n, seed in (("train", 60, 1), ("val", 20, 2))}
    for split, records in splits.items():
        write_manifest(tmp_path / split, records)
    texts = [r["text"].lower() for r in splits["train"]]
    folder = tiny_bert(tmp_path / "zh_bert", texts, weights="pytorch_model.bin", lowercase=False)
    assert not (folder / "model.safetensors").exists() and (folder / "pytorch_model.bin").is_file()
    tokenizer = load_tokenizer(folder)  # its English entries are lower case: it lower-cases
    assert tokenizer.tokenize("我的iPhone用APP") == tokenizer.tokenize("我的iphone用app")
    assert tokenizer.unk_token not in tokenizer.tokenize("我的IPHONE用App，GPU也很烫")
    data = [
        "--config",
        str(ROOT / "configs" / "demo.yaml"),
        "--config",
        str(ROOT / "configs" / "text_only.yaml"),
        "--data.train",
        str(tmp_path / "train"),
        "--data.val",
        str(tmp_path / "val"),
        "--data.test",
        "null",
        "--data.tasks",
        "[{name: label, column: label}]",
        "--data.num_workers",
        "0",
        "--trainer.max_epochs",
        "1",
        "--runs_root",
        str(tmp_path / "runs"),
    ]
    teacher = fit(
        [*data, "--config", str(ROOT / "configs" / "transformer.yaml"), "--model.text_pretrained", str(folder)]
    ).run_dir
    student = fit(
        [
            *data,
            "--config",
            str(ROOT / "configs" / "distill.yaml"),
            "--model.teacher",
            str(teacher),
            "--model.embed_dim",
            "32",
        ]
    ).run_dir
    vocab = tokenizer.get_vocab()
    assert f"embeddings_from: {len(vocab)} of {len(vocab)} token rows from {folder}" in caplog.text
    assert json.loads((student / "run.json").read_text())["distillation"]["teacher"] == str(teacher)
    for run in (teacher, student):  # the run folders read the English words as the teacher's folder does
        saved = load_tokenizer(run / "tokenizer")
        assert saved.get_vocab() == vocab and saved.tokenize("我的IPHONE") == tokenizer.tokenize("我的iphone")


def test_a_folder_without_weights_is_one_line_naming_both_files(tiny_demo, tiny_bert_dir, tmp_path):
    bare = shutil.copytree(tiny_bert_dir, tmp_path / "bare", ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(FileNotFoundError) as e:
        pretrained_input_embeddings(bare)
    assert f"model.embeddings_from={bare}: neither model.safetensors nor pytorch_model.bin there" in str(e.value)
    assert "\n" not in str(e.value)


# -- a student learns from its teacher --

TOPICS = {
    "billing": ["charged twice on my card", "the invoice amount is wrong", "double payment taken"],
    "delivery": ["the courier never came", "parcel lost in transit", "package delivered to wrong address"],
    "refund": ["still waiting for my money back", "refund not received after return", "return accepted but no refund"],
}


def topic_records(n: int, topics: list[str], seed: int, prefix: str, labelled: bool = True) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        topic = topics[i % len(topics)]
        greeting, closing = rng.choice(["hello", "hi", "dear team"]), rng.choice(["thanks", "please help", ""])
        text = f"{greeting} {rng.choice(TOPICS[topic])} {closing}"
        out.append({"id": f"{prefix}{i}", "text": text, **({"topic": topic} if labelled else {})})
    return out


def test_student_learns_from_unlabelled_records_a_class_its_labels_never_showed(tmp_path):
    archives = {}
    for name, records in {
        "teacher_train": topic_records(90, list(TOPICS), 0, "t"),
        "val": topic_records(30, list(TOPICS), 1, "v"),
        "student_train": topic_records(40, ["billing", "delivery"], 2, "s"),  # never a refund label
        "unlabelled": topic_records(60, list(TOPICS), 3, "u", labelled=False),
        "test": topic_records(30, ["refund"], 4, "x"),
    }.items():
        write_manifest(tmp_path / name, records)
        archives[name] = str(tmp_path / name)
    common = [
        "--config",
        str(ROOT / "configs" / "demo.yaml"),
        "--config",
        str(ROOT / "configs" / "text_only.yaml"),
        "--data.tasks",
        '[{"name": "topic", "column": "topic"}]',
        "--data.val",
        archives["val"],
        "--data.test",
        "null",
        "--data.num_workers",
        "0",
        "--data.batch_size",
        "16",
        "--model.embed_dim",
        "32",
        "--model.text_hidden",
        "32",
        "--model.fusion_dim",
        "32",
        "--model.text_linear",
        "false",
        "--trainer.max_epochs",
        "12",
        "--runs_root",
        str(tmp_path / "runs"),
    ]
    teacher = fit([*common, "--data.train", archives["teacher_train"], "--experiment", "teacher"]).run_dir
    student = fit(
        [
            *common,
            "--config",
            str(ROOT / "configs" / "distill.yaml"),
            "--model.teacher",
            str(teacher),
            "--data.train",
            archives["student_train"],
            "--data.unlabeled",
            f'["{archives["unlabelled"]}"]',
            "--data.distill_augment",
            "0",
            "--model.distill_alpha",
            "0.5",
            "--experiment",
            "student",
        ]
    ).run_dir
    assert json.loads((student / "labels.json").read_text())["classes"]["topic"] == ["billing", "delivery", "refund"]
    learnt_from = json.loads((student / "run.json").read_text())["distillation_set"]
    assert learnt_from == {"labelled": 40, "unlabelled": 60, "augmented": 0, "photo views": 0}
    rows = list(ComplaintAnalyzer.from_checkpoint(student).predict(archives["test"]))
    assert sum(r["topic"] == "refund" for r in rows) >= 0.9 * len(rows)


def test_few_labelled_texts_for_many_classes_and_no_unlabelled_archive_brings_advice():
    classes = {"sentiment": ["neg", "pos"], "category": [f"c{i}" for i in range(10)]}
    few = distillation_set_lines({"labelled": 3000, "unlabelled": 0, "augmented": 12000}, classes, 10)
    assert few[0] == "the student learnt from 15,000 records: 3,000 labelled, 0 unlabelled, 12,000 augmented copies"
    assert len(few) == 2 and "300 per class of category's 10" in few[1] and "--data.unlabeled" in few[1]
    assert len(distillation_set_lines({"labelled": 3000, "unlabelled": 6000, "augmented": 9000}, classes, 10)) == 1
    assert len(distillation_set_lines({"labelled": 8000, "unlabelled": 0, "augmented": 0}, classes, 10)) == 1
    assert len(distillation_set_lines({"labelled": 6000, "unlabelled": 0, "augmented": 0}, {"s": ["a", "b"]}, 10)) == 1


def test_a_short_fit_brings_advice_to_double_the_epochs():
    counts = {"labelled": 400, "unlabelled": 0, "augmented": 1600}
    short = distillation_set_lines(counts, {"s": ["a", "b"]}, 10)
    assert len(short) == 2 and "a short fit (2,000 records, 10 epochs)" in short[1]
    assert short[1].endswith("--trainer.max_epochs 20")
    assert len(distillation_set_lines(counts, {"s": ["a", "b"]}, 25)) == 1  # 50,000 reads
    assert len(distillation_set_lines(counts, {"s": ["a", "b"]}, -1)) == 1  # bounded by max_steps instead
