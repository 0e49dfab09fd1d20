import pytest
import torch
from torch import nn

from pipeline.data.labels import IGNORE_INDEX
from pipeline.models.complaint_model import DEEP_WEIGHTS, ComplaintModel
from pipeline.models.fusion import AttentionFusion
from pipeline.models.image_encoder import ImageEncoder
from pipeline.models.modality_dropout import drop_modalities
from pipeline.models.network_options import NetworkOptions
from pipeline.models.text_encoder import LSTMTextEncoder, TextCNNEncoder
from pipeline.training.blend import Blend
from pipeline.training.cli import serving_parts
from pipeline.training.metrics import metric_inputs, task_metrics
from pipeline.training.model_options import BlendOptions
from pipeline.training.module import ComplaintClassifier

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
    options = NetworkOptions(embed_dim=16, text_hidden=16, image_dim=16, fusion_dim=16, fusion_heads=2, **kw)
    return ComplaintModel(vocab_size=50, num_classes={"cat": 3, "sev": 2}, options=options).eval()


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


def test_a_batch_without_pictures_leaves_batch_norm_statistics_alone_and_reaches_every_parameter():
    m = model().train()
    b = batch()
    b["image_mask"][:] = False
    b["video_mask"][:] = False
    statistics = {k: v.clone() for k, v in m.image_encoder.state_dict().items() if "running" in k}
    assert statistics
    features, _ = m.forward_features(b)
    m.forward_head(features)["cat"].sum().backward()
    for k, v in m.image_encoder.state_dict().items():
        if k in statistics:
            torch.testing.assert_close(v, statistics[k], rtol=0, atol=0)
    grads = [p.grad for p in m.image_encoder.parameters()]
    assert all(g is not None and g.abs().sum() == 0 for g in grads)  # in the graph (DDP), at zero


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


def test_lstm_on_padded_rows_equals_packed_sequences_in_values_and_gradients():
    torch.manual_seed(0)
    enc = LSTMTextEncoder(50, 16, 16, num_layers=2).eval()  # eval: no dropout between layers
    x = torch.randn(5, 9, 16, requires_grad=True)
    lengths = torch.tensor([9, 4, 1, 7, 2])
    valid = (torch.arange(9) < lengths.unsqueeze(1)).unsqueeze(-1)
    packed, padded = enc._packed(x, lengths) * valid, enc._padded(x, lengths) * valid
    torch.testing.assert_close(padded, packed)
    weights = list(enc.lstm.parameters())
    for a, b in zip(
        torch.autograd.grad(packed.pow(2).sum(), [x, *weights]), torch.autograd.grad(padded.pow(2).sum(), [x, *weights])
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert [n for n, _ in enc.named_parameters() if n.startswith("lstm")] == [
        n for n, _ in nn.LSTM(16, 16, 2, bidirectional=True).named_parameters(prefix="lstm")
    ]  # the state dict is unchanged


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
    lit = ComplaintClassifier.from_keys(
        vocab_size=50,
        task_classes={"cat": ["a", "b", "c"], "sev": ["x", "y"]},
        embed_dim=16,
        text_hidden=16,
        image_dim=16,
        fusion_dim=16,
        fusion_heads=2,
        modality_dropout=0.0,
        dropout=0.0,
    )
    b = batch()
    opt = torch.optim.Adam(lit.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = lit.loss(lit(b), b["labels"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses[::10]


@pytest.mark.parametrize("fusion", ["attention", "concat"])
def test_unimodal_heads_learn_each_modality_alone_on_the_records_that_have_it(fusion):
    keys = dict(vocab_size=50, task_classes={"cat": ["a", "b", "c"], "sev": ["x", "y"]}, embed_dim=16, fusion=fusion)
    keys.update(text_hidden=16, image_dim=16, fusion_dim=16, fusion_heads=2, modality_dropout=0.0, dropout=0.0)
    torch.manual_seed(0)
    lit = ComplaintClassifier.from_keys(unimodal_loss=0.5, **keys).eval()
    b = batch()
    features, explain = lit.forward_features(b)
    unimodal = lit.model.unimodal_logits(explain["items"])
    assert {m: rows.tolist() for m, (rows, _) in unimodal.items()} == {
        "text": [0, 1, 3],
        "image": [0, 1],
        "video": [1, 2],
    }
    other = dict(b, images=torch.randint(0, 255, b["images"].shape, dtype=torch.uint8))
    again = lit.model.unimodal_logits(lit.forward_features(other)[1]["items"])
    torch.testing.assert_close(again["text"][1], unimodal["text"][1])  # the text head reads no pixels
    assert not torch.allclose(again["image"][1]["cat"], unimodal["image"][1]["cat"])

    fused = lit.loss(lit.forward_head(features), b["labels"])
    extra = sum(lit.loss(logits, {t: y[rows] for t, y in b["labels"].items()}) for rows, logits in unimodal.values())
    torch.testing.assert_close(lit.training_loss(b), fused + 0.5 * extra)
    plain = ComplaintClassifier.from_keys(**keys)
    assert plain.model.unimodal_heads is None
    assert lit(b).keys() == plain(b).keys()  # predictions: the fused heads alone


def test_loss_masks_missing_labels():
    lit = ComplaintClassifier.from_keys(
        vocab_size=50,
        task_classes={"cat": ["a", "b", "c"], "sev": ["x", "y"]},
        embed_dim=16,
        text_hidden=16,
        image_dim=16,
        fusion_dim=16,
        fusion_heads=2,
    ).eval()
    b = batch()
    logits = lit(b)
    full = lit.loss(logits, b["labels"])
    changed = dict(b["labels"])
    changed["cat"] = torch.tensor([0, 1, 2, IGNORE_INDEX])
    logits_changed = {k: v.clone() for k, v in logits.items()}
    logits_changed["cat"][3] += 100.0  # the unlabelled record's logits cannot matter
    torch.testing.assert_close(lit.loss(logits_changed, changed), full)
    none = {"cat": torch.full((4,), IGNORE_INDEX), "sev": torch.full((4,), IGNORE_INDEX)}
    assert lit.loss(logits, none).item() == 0.0


def test_modality_dropout_never_hides_everything():
    torch.manual_seed(0)
    lit = ComplaintClassifier.from_keys(
        vocab_size=50,
        task_classes={"cat": ["a", "b"]},
        modality_dropout=0.99,
        embed_dim=16,
        text_hidden=16,
        image_dim=16,
        fusion_dim=16,
        fusion_heads=2,
    )
    b = batch()
    dropped = drop_modalities(b, lit.options.optimization.modality_dropout)
    present = torch.stack([dropped["text_lengths"] > 0, dropped["image_mask"].any(1), dropped["video_mask"].any(1)], 1)
    assert present.any(1).all()


def test_attention_fusion_layout():
    assert AttentionFusion.layout({"text": 1, "image": 2}) == [
        ("text", 0),
        ("text", None),
        ("image", 0),
        ("image", 1),
        ("image", None),
    ]


def test_tfidf_features_match_scikit_learn():
    from sklearn.feature_extraction.text import TfidfVectorizer

    from pipeline.models.tfidf_linear import TfidfLinear

    ids = torch.tensor([[5, 6, 5, 7, 0], [9, 5, 0, 0, 0], [3, 3, 3, 9, 6]])
    lengths = torch.tensor([4, 2, 5])
    docs = [row[:n].tolist() for row, n in zip(ids, lengths)]
    reference = TfidfVectorizer(analyzer=lambda d: d, sublinear_tf=True).fit(docs)
    tfidf = torch.tensor(reference.transform(docs).toarray(), dtype=torch.float)
    expected = torch.zeros(3, 12)
    for token, column in reference.vocabulary_.items():
        expected[:, token] = tfidf[:, column]
    linear = TfidfLinear(12, {"cat": 3})
    linear.set_idf(ids, lengths)
    torch.testing.assert_close(linear.features(ids, lengths), expected)
    torch.testing.assert_close(linear.sparse_features(ids, lengths).to_dense(), expected)


def test_tfidf_fit_matches_scikit_learn_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    from pipeline.models.tfidf_linear import TfidfLinear

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (60,), generator=g)
    ids = torch.randint(2, 40, (60, 12), generator=g)
    ids[:, 0] = 40 + y  # one token tells the class, the rest is noise
    lengths = torch.randint(4, 13, (60,), generator=g)
    linear = TfidfLinear(43, {"cat": 3})
    linear.set_idf(ids, lengths)
    features = linear.sparse_features(ids, lengths)
    C = 3.0
    linear.fit(features, lambda logits: torch.nn.functional.cross_entropy(logits["cat"], y), l2=1 / (2 * C * len(y)))
    reference = LogisticRegression(C=C, max_iter=5000, tol=1e-8).fit(features.to_dense().numpy(), y.numpy())
    with torch.no_grad():
        probs = torch.softmax(linear.logits(features)["cat"], dim=1)
    expected = torch.tensor(reference.predict_proba(features.to_dense().numpy()), dtype=torch.float)
    torch.testing.assert_close(probs, expected, atol=1e-3, rtol=0)
    assert not any(p.requires_grad for p in linear.parameters())  # never trained by the network's optimiser


def test_tfidf_linear_ignores_padding_and_empty_text():
    from pipeline.models.tfidf_linear import TfidfLinear

    torch.manual_seed(0)
    linear = TfidfLinear(50, {"cat": 3, "sev": 2})
    torch.nn.init.normal_(linear.weight)
    torch.nn.init.normal_(linear.bias)
    ids = torch.tensor([[5, 6, 7, 0], [9, 0, 0, 0], [0, 0, 0, 0]])
    lengths = torch.tensor([3, 1, 0])
    short = linear(ids, lengths)
    padded = linear(torch.cat([ids, torch.full((3, 5), 3)], 1), lengths)  # garbage after the end
    for task, n in (("cat", 3), ("sev", 2)):
        assert short[task].shape == (3, n)
        torch.testing.assert_close(short[task], padded[task])
    torch.testing.assert_close(short["cat"][2], linear.bias[:3])  # no text: the bias alone


def test_tfidf_linear_per_token_logits_equal_the_rows_scikit_learn_checks():
    from pipeline.models.tfidf_linear import TfidfLinear

    torch.manual_seed(0)
    linear = TfidfLinear(30, {"cat": 3, "sev": 2})
    torch.nn.init.normal_(linear.weight)
    torch.nn.init.normal_(linear.bias)
    ids = torch.tensor([[5, 6, 5, 5, 9, 6], [7, 0, 7, 0, 0, 0], [4, 4, 4, 4, 4, 4], [8, 8, 8, 8, 8, 8]])
    lengths = torch.tensor([5, 3, 6, 0])  # repeats, the padding token inside the text, garbage after it, no text
    linear.set_idf(torch.randint(1, 30, (40, 6)), torch.full((40,), 6))
    per_token = linear(ids, lengths)
    rows = linear.logits(linear.features(ids, lengths))
    for task in ("cat", "sev"):
        torch.testing.assert_close(per_token[task], rows[task])


def test_text_linear_blends_with_the_network_per_task():
    m = model(text_linear=True)
    b = batch()
    torch.nn.init.normal_(m.text_linear.weight)
    with torch.no_grad():
        deep = m.forward_head(m.forward_features(b)[0])
        linear = m.linear_logits(b)
        m.deep_weight.copy_(torch.tensor([1.0, 0.0]))  # cat: the network alone; sev: the TF-IDF path alone
        out = m(b)
    torch.testing.assert_close(out["cat"], deep["cat"])
    torch.testing.assert_close(out["sev"], linear["sev"])
    assert not torch.allclose(deep["sev"], linear["sev"])
    assert model(text_linear=True, modalities=("image",)).text_linear is None  # needs the text


def test_text_linear_draws_no_random_numbers():
    model(text_linear=True)  # seeds, then builds
    after_with = torch.rand(3)
    model(text_linear=False)
    assert torch.equal(after_with, torch.rand(3))  # so the network is initialised and trained as without it


def test_balanced_class_weights():
    from pipeline.training.losses import MAX_CLASS_WEIGHT, balanced_weights

    w = balanced_weights({"cat": [90, 10, 0], "tags": [1, 1]}, multilabel=["tags"])
    assert w["cat"][0] == pytest.approx(100 / (3 * 90)) and w["cat"][1] == pytest.approx(100 / 30)
    assert w["cat"][2] == MAX_CLASS_WEIGHT and "tags" not in w


def test_fit_text_linear_learns_multiclass_and_multilabel_tasks_with_missing_labels():
    def split(n, seed):
        g = torch.Generator().manual_seed(seed)
        cat = torch.randint(0, 3, (n,), generator=g)
        tags = torch.randint(0, 2, (n, 2), generator=g).float()
        ids = torch.randint(2, 30, (n, 10), generator=g)
        ids[:, 0], ids[:, 1], ids[:, 2] = 30 + cat, 33 + tags[:, 0].long(), 35 + tags[:, 1].long()
        cat[:5], tags[5:10] = IGNORE_INDEX, -1.0  # unlabelled records take no part
        return ids, torch.full((n,), 10), {"cat": cat, "tags": tags}

    lit = ComplaintClassifier.from_keys(
        vocab_size=37,
        task_classes={"cat": ["a", "b", "c"], "tags": ["x", "y"]},
        multilabel_tasks=["tags"],
        embed_dim=16,
        text_hidden=16,
        image_dim=16,
        fusion_dim=16,
        fusion_heads=2,
        text_linear_c=[0.01, 10.0],
    )
    chosen = lit.fit_text_linear(split(200, 0), split(100, 1))
    assert chosen == {"cat": 10.0, "tags": 10.0}  # the weak penalty fits these clean tokens best
    ids, lengths, targets = split(100, 2)
    with torch.no_grad():
        logits = lit.model.text_linear(ids, lengths)
    metrics = task_metrics(lit.facts.task_classes, lit.multilabel)
    for task in ("cat", "tags"):
        metrics[task][0].update(*metric_inputs(logits[task], targets[task], task in lit.multilabel))
        assert metrics[task][0].compute()["f1_macro"] > 0.95


def test_the_regression_alone_serves_only_ahead_of_every_blend_with_the_network_by_the_margin():
    def chosen(scores, margin=0.01):
        blend = Blend(model(text_linear=True), BlendOptions(blend_margin=margin))
        candidates = [{"f1_macro": s} for s in scores]  # in DEEP_WEIGHTS order: the regression alone first
        return blend.choose(["cat", "sev"], {"cat": candidates, "sev": candidates})["cat"]

    assert DEEP_WEIGHTS[0] == 0.0 and DEEP_WEIGHTS[-1] == 1.0
    assert chosen([0.600, 0.590, 0.595, 0.560, 0.550]) == 0.5  # ahead by 0.005: the best blend with the network
    assert chosen([0.620, 0.590, 0.595, 0.560, 0.550]) == 0.0  # ahead by 0.025: the regression alone
    assert chosen([0.600, 0.590, 0.595, 0.560, 0.550], margin=0.0) == 0.0
    assert chosen([0.500, 0.590, 0.600, 0.600, 0.550]) == 0.5  # ties: the smaller network weight
    assert serving_parts(0.0, ["text", "image"]).startswith("the TF-IDF regression on the text alone")
    assert serving_parts(0.75, ["text", "image"]) == "the network (text + image) and the TF-IDF regression, 0.75 : 0.25"
    assert serving_parts(None, ["image"]) == "the network (image)"
