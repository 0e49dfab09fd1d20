import pytest
import torch

from pipeline.data.labels import IGNORE_INDEX
from pipeline.lit_module import ComplaintClassifier
from pipeline.models.complaint_model import ComplaintModel
from pipeline.models.fusion import AttentionFusion
from pipeline.models.image_encoder import ImageEncoder
from pipeline.models.text_encoder import LSTMTextEncoder, TextCNNEncoder

S, T = 32, 3


def batch(B=4, L=7, N=2, V=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 3, 0, 5][:B])
    ids = torch.randint(2, 50, (B, L), generator=g) * (torch.arange(L) < lengths[:, None])
    return {
        "text_ids": ids,
        "text_lengths": lengths,
        "images": torch.randint(0, 255, (B, N, 3, S, S), generator=g, dtype=torch.uint8),
        "image_mask": torch.tensor([[True, True], [True, False], [False, False], [False, False]][:B]),
        "videos": torch.randint(0, 255, (B, V, T, 3, S, S), generator=g, dtype=torch.uint8),
        "video_mask": torch.tensor([[False, False], [True, False], [True, True], [False, False]][:B]),
        "ids": [str(i) for i in range(B)],
        "labels": {"cat": torch.tensor([0, 1, 2, IGNORE_INDEX][:B]), "sev": torch.tensor([1, 0, 1, 0][:B])},
    }


def model(**kw):
    torch.manual_seed(0)
    return ComplaintModel(vocab_size=50, num_classes={"cat": 3, "sev": 2}, embed_dim=16, text_hidden=16,
                          image_dim=16, fusion_dim=16, fusion_heads=2, **kw).eval()


def test_garbage_in_masked_slots_changes_nothing():
    for fusion in ("attention", "concat"):
        m = model(fusion=fusion)
        b = batch()
        clean = {k: v.clone() if torch.is_tensor(v) else v for k, v in b.items()}
        clean["images"][~b["image_mask"]] = 0
        clean["videos"][~b["video_mask"]] = 0
        with torch.no_grad():
            a, c = m(b), m(clean)
        for task in a:
            torch.testing.assert_close(a[task], c[task])


def test_padding_changes_nothing_in_text_encoders():
    torch.manual_seed(0)
    for enc in (LSTMTextEncoder(50, 16, 16), TextCNNEncoder(50, 16, 8)):
        enc.eval()
        ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
        lengths = torch.tensor([4, 2])
        padded = torch.cat([ids, torch.zeros(2, 6, dtype=torch.long)], dim=1)
        with torch.no_grad():
            v1, w1 = enc(ids, lengths)
            v2, w2 = enc(padded, lengths)
        torch.testing.assert_close(v1, v2)
        if w1 is not None:
            torch.testing.assert_close(w1, w2[:, :4])
            assert w2[:, 4:].abs().sum() == 0 and w1[1, 2:].abs().sum() == 0


def test_record_without_text_or_attachments_works():
    m = model()
    b = batch()
    with torch.no_grad():
        features, explain = m.forward_features(b)
    assert features.shape == (4, 16) and torch.isfinite(features).all()
    layout = explain["layout"]
    w = explain["fusion_weights"]  # (B, tokens)
    assert w.shape == (4, len(layout)) and torch.allclose(w.sum(1), torch.ones(4))
    absent_text = layout.index(("text", None))
    assert w[2, absent_text] > 0 and w[0, absent_text] == 0  # record 2 has no text
    first_image = layout.index(("image", 0))
    assert w[2, first_image] == 0  # masked image gets no weight


def test_forward_features_and_head_compose():
    m = model()
    b = batch()
    with torch.no_grad():
        direct = m(b)
        features, _ = m.forward_features(b)
        composed = m.forward_head(features)
    for task in direct:
        torch.testing.assert_close(direct[task], composed[task])
        assert direct[task].shape == (4, {"cat": 3, "sev": 2}[task])


def test_image_backbones_expose_out_dim():
    for name, dim in [("small_cnn", 24), ("mobilenet_v3_small", 576), ("resnet18", 512)]:
        enc = ImageEncoder(name, out_dim=24).eval()
        assert enc.out_dim == dim
        with torch.no_grad():
            assert enc(torch.zeros(2, 3, S, S, dtype=torch.uint8)).shape == (2, dim)


def test_backbone_weights_from_local_file(tmp_path):
    import pytest

    src = ImageEncoder("resnet18")
    path = tmp_path / "resnet18.pt"
    torch.save(src.backbone.state_dict(), path)
    loaded = ImageEncoder("resnet18", weights_path=str(path), freeze=True)
    assert torch.equal(loaded.backbone.conv1.weight, src.backbone.conv1.weight)
    assert not any(p.requires_grad for p in loaded.backbone.parameters())
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        ImageEncoder("resnet18", weights_path=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="does not fit"):
        ImageEncoder("mobilenet_v3_small", weights_path=str(path))


def test_overfitting_one_batch_drives_loss_down():
    torch.manual_seed(0)
    lit = ComplaintClassifier(vocab_size=50, task_classes={"cat": ["a", "b", "c"], "sev": ["x", "y"]},
                              embed_dim=16, text_hidden=16, image_dim=16, fusion_dim=16, fusion_heads=2,
                              modality_dropout=0.0, dropout=0.0)
    b = batch()
    opt = torch.optim.Adam(lit.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = lit._loss(lit(b), b["labels"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses[::10]


def test_loss_masks_missing_labels():
    lit = ComplaintClassifier(vocab_size=50, task_classes={"cat": ["a", "b", "c"], "sev": ["x", "y"]},
                              embed_dim=16, text_hidden=16, image_dim=16, fusion_dim=16, fusion_heads=2).eval()
    b = batch()
    logits = lit(b)
    full = lit._loss(logits, b["labels"])
    changed = dict(b["labels"])
    changed["cat"] = torch.tensor([0, 1, 2, IGNORE_INDEX])
    logits_changed = {k: v.clone() for k, v in logits.items()}
    logits_changed["cat"][3] += 100.0  # the unlabelled record's logits cannot matter
    torch.testing.assert_close(lit._loss(logits_changed, changed), full)
    none = {"cat": torch.full((4,), IGNORE_INDEX), "sev": torch.full((4,), IGNORE_INDEX)}
    assert lit._loss(logits, none).item() == 0.0


def test_modality_dropout_never_hides_everything():
    torch.manual_seed(0)
    lit = ComplaintClassifier(vocab_size=50, task_classes={"cat": ["a", "b"]}, modality_dropout=0.99,
                              embed_dim=16, text_hidden=16, image_dim=16, fusion_dim=16, fusion_heads=2)
    b = batch()
    dropped = lit._drop_modalities(b)
    present = torch.stack([dropped["text_lengths"] > 0, dropped["image_mask"].any(1), dropped["video_mask"].any(1)], 1)
    assert present.any(1).all()


def test_attention_fusion_layout():
    assert AttentionFusion.layout({"text": 1, "image": 2}) == [("text", 0), ("text", None), ("image", 0), ("image", 1), ("image", None)]


def test_bag_of_ngrams_ignores_padding_and_empty_text():
    from pipeline.models.bag_of_ngrams import BagOfNgrams
    from pipeline.models.text_encoder import length_mask

    torch.manual_seed(0)
    bag = BagOfNgrams(50, dim=8, buckets=97)
    torch.nn.init.normal_(bag.score.weight)
    ids = torch.tensor([[5, 6, 7, 0], [9, 0, 0, 0], [0, 0, 0, 0]])
    lengths = torch.tensor([3, 1, 0])
    short = bag(ids, length_mask(lengths, 4))
    padded = bag(torch.cat([ids, torch.full((3, 5), 3)], 1), length_mask(lengths, 9))  # garbage after the end
    torch.testing.assert_close(short, padded)
    assert short[2].abs().sum() == 0  # no text, no vector


def test_wide_text_path_reaches_the_heads():
    m = model(text_bag_dim=8)
    b = batch()
    with torch.no_grad():
        features, _ = m.forward_features(b)
        assert features.shape == (4, 16 + 8)
        before = m(b)["cat"]
        m.text_bag.embedding.weight.add_(1.0)
        after = m(b)["cat"]
    assert not torch.allclose(before[:2], after[:2])  # records with text change
    torch.testing.assert_close(before[2], after[2])  # the record without text does not


def test_balanced_class_weights():
    from pipeline.lit_module import MAX_CLASS_WEIGHT, balanced_weights

    w = balanced_weights({"cat": [90, 10, 0], "tags": [1, 1]}, multilabel=["tags"])
    assert w["cat"][0] == pytest.approx(100 / (3 * 90)) and w["cat"][1] == pytest.approx(100 / 30)
    assert w["cat"][2] == MAX_CLASS_WEIGHT and "tags" not in w
