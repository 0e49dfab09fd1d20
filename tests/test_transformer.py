"""The transformer text encoder from a local folder: tokens, pooling, freezing, train.py and infer.py."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from pipeline.data.text import load_tokenizer
from pipeline.inference.command import main as infer_main
from pipeline.models.transformer_encoder import TEXT_MODEL_DIR, TransformerTextEncoder
from pipeline.training.cli import ComplaintCLI

ROOT = Path(__file__).parents[1]


def encoder(folder, **kw) -> TransformerTextEncoder:
    torch.manual_seed(0)
    return TransformerTextEncoder(str(folder), **kw).eval()


def test_specials_and_mean_pooling_match_the_tokenizers_own_encoding(tiny_bert_dir):
    enc = encoder(tiny_bert_dir)
    tok = load_tokenizer(tiny_bert_dir)
    texts = ["the parcel arrived broken", "refund please"]
    full = tok(texts, padding=True, return_tensors="pt")  # [CLS] ... [SEP], as the model was pretrained
    plain = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    lengths = torch.tensor([len(p) for p in plain])
    L = max(lengths) + 3  # extra padding beyond the longest text
    ids = torch.zeros(2, L, dtype=torch.long)
    for row, p in zip(ids, plain):
        row[: len(p)] = torch.tensor(p)
    with_specials, mask = enc.with_specials(ids, lengths)
    assert with_specials[:, : full["input_ids"].shape[1]].tolist() == full["input_ids"].tolist()
    with torch.no_grad():
        vec, weights = enc(ids, lengths)
        states = enc.transformer(input_ids=full["input_ids"], attention_mask=full["attention_mask"]).last_hidden_state
    m = full["attention_mask"].unsqueeze(-1).float()
    torch.testing.assert_close(vec, (states * m).sum(1) / m.sum(1))
    assert weights.shape == (2, L) and weights[1, lengths[1] :].abs().sum() == 0
    torch.testing.assert_close(weights.sum(1), lengths / (lengths + 2.0))  # uniform, specials' share not shown


@pytest.mark.parametrize("pooling", ["mean", "cls", "attention"])
def test_padding_and_empty_text(tiny_bert_dir, pooling):
    enc = encoder(tiny_bert_dir, pooling=pooling)
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0], [0, 0, 0, 0]])
    lengths = torch.tensor([4, 2, 0])
    padded = torch.cat([ids, torch.full((3, 5), 3)], dim=1)  # garbage after the lengths is never read
    with torch.no_grad():
        v1, w1 = enc(ids, lengths)
        v2, w2 = enc(padded, lengths)
    torch.testing.assert_close(v1, v2)
    assert v1.shape == (3, enc.out_dim) and v1[2].abs().sum() == 0 and v1[0].abs().sum() > 0
    if pooling == "cls":
        assert w1 is None and w2 is None
    else:
        torch.testing.assert_close(w1, w2[:, :4])
        assert w2[:, 4:].abs().sum() == 0 and w1[2].abs().sum() == 0
    if pooling == "attention":
        torch.testing.assert_close(w1[:2].sum(1), torch.ones(2))


def test_long_text_is_truncated_to_the_models_positions(tiny_bert_dir):
    enc = encoder(tiny_bert_dir)
    assert enc.max_tokens == 62  # 64 positions, [CLS] and [SEP]
    ids = torch.randint(5, 100, (1, 200))
    with torch.no_grad():
        vec, weights = enc(ids, torch.tensor([200]))
        kept, _ = enc(ids[:, :62], torch.tensor([62]))
    torch.testing.assert_close(vec, kept)
    assert weights.shape == (1, 200) and weights[0, 62:].abs().sum() == 0


def test_freeze_lower_layers(tiny_bert_dir):
    enc = TransformerTextEncoder(str(tiny_bert_dir), freeze_layers=1)
    frozen = {n for n, p in enc.transformer.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("embeddings.", "encoder.layer.0.")) for n in frozen)
    assert any(n.startswith("embeddings.word_embeddings") for n in frozen)
    assert all(p.requires_grad for p in enc.transformer.encoder.layer[1].parameters())
    assert enc.transformer.training  # Lightning keeps a submodule's mode: dropout must be on in training
    with pytest.raises(ValueError, match="has 2 layers"):
        TransformerTextEncoder(str(tiny_bert_dir), freeze_layers=3)
    with pytest.raises(ValueError, match="not one of"):
        TransformerTextEncoder(str(tiny_bert_dir), pooling="max")
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        TransformerTextEncoder(str(tiny_bert_dir / "missing"))


def fit_transformer(tiny, pretrained, runs, *extra):
    return ComplaintCLI(
        args=[
            "fit",
            "--config",
            str(ROOT / "configs" / "demo.yaml"),
            "--config",
            str(ROOT / "configs" / "text_only.yaml"),
            "--config",
            str(ROOT / "configs" / "transformer.yaml"),
            "--model.text_pretrained",
            str(pretrained),
            "--data.train",
            str(tiny["train"]),
            "--data.val",
            str(tiny["val"]),
            "--data.test",
            "null",
            "--data.num_workers",
            "0",
            "--trainer.max_epochs",
            "1",
            "--runs_root",
            str(runs),
            *extra,
        ]
    )


def test_transformer_trains_through_train_py_and_predicts_through_infer_py(tiny_demo, tiny_bert_dir, tmp_path):
    pretrained = shutil.copytree(tiny_bert_dir, tmp_path / "bert")
    c = fit_transformer(tiny_demo, pretrained, tmp_path / "runs", "--model.text_lr", "0.0003", "--model.lr", "0.002")
    run = c.run_dir
    groups = c.model.optimizers().optimizer.param_groups
    assert sorted(g["initial_lr"] for g in groups) == [0.0003, 0.002]
    text_model = run / TEXT_MODEL_DIR
    assert (text_model / "config.json").is_file() and (text_model / "tokenizer.json").is_file()
    assert not list(text_model.glob("*.safetensors"))  # the weights are in the checkpoint
    assert load_tokenizer(run / "tokenizer").get_vocab() == load_tokenizer(pretrained).get_vocab()
    before = c.model.model.text_encoder.transformer.embeddings.word_embeddings.weight.detach().clone()

    shutil.rmtree(pretrained)  # inference needs nothing but the run folder
    out = tmp_path / "pred.jsonl"
    assert (
        infer_main(
            ["--checkpoint", str(run), "--input", str(tiny_demo["test"]), "--output", str(out), "--num-workers", "0"]
        )
        == 0
    )
    rows = [json.loads(line) for line in open(out, encoding="utf-8")]
    assert len(rows) == sum(1 for _ in open(tiny_demo["test"] / "complaints.jsonl")) and rows[0]["category"]

    from pipeline.models.trained_run import load_run

    loaded = load_run(run)
    weights = loaded.model.model.text_encoder.transformer.embeddings.word_embeddings.weight
    torch.testing.assert_close(weights, before)  # fine-tuned weights, not a fresh architecture
    batch = next(iter(c.datamodule.val_dataloader()))
    c.model.eval()
    with torch.no_grad():
        expected, got = c.model(batch), loaded.model(batch)
    for task in expected:
        torch.testing.assert_close(expected[task], got[task])


def test_transformer_fits_in_bf16_mixed(tiny_demo, tiny_bert_dir, tmp_path):
    c = fit_transformer(
        tiny_demo,
        tiny_bert_dir,
        tmp_path,
        "--trainer.precision",
        "bf16-mixed",
        "--trainer.fast_dev_run",
        "true",
        "--model.text_pooling",
        "attention",
    )
    assert c.trainer.state.finished and c.trainer.precision == "bf16-mixed"


def test_transformer_refuses_another_tokenizer_and_a_folder_without_weights(tiny_demo, tiny_bert_dir, tmp_path):
    with pytest.raises(ValueError, match="reads the tokens of its own tokenizer"):
        fit_transformer(tiny_demo, tiny_bert_dir, tmp_path, "--data.tokenizer_path", str(tmp_path))
    architecture_only = shutil.copytree(
        tiny_bert_dir, tmp_path / "bare", ignore=shutil.ignore_patterns("*.safetensors")
    )
    with pytest.raises(FileNotFoundError, match="would start untrained") as e:
        fit_transformer(tiny_demo, architecture_only, tmp_path)
    assert "neither model.safetensors nor pytorch_model.bin there" in str(e.value) and "\n" not in str(e.value)
