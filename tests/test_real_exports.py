"""Real exports as they come: records without evidence, rare labels, leakage between splits, PII."""

import json
import logging

import pytest

from factory import ROOT, image_bytes, infer, read_jsonl, write_manifest
from pipeline.tools.doctor import NO_EVIDENCE
from pipeline.tools.doctor import main as doctor
from pipeline.training.cli import ComplaintCLI

WORDS = {
    "Mortgage": "escrow payment loan house",
    "Debt collection": "collector calls owed debt",
    "Credit card": "card interest statement charge",
}


def cfpb_shaped(root, narratives_per_product=10, empty=12):
    """A CSV in the CFPB export's shape: narratives for some rows, empty or blank ones for the rest."""
    rows = []
    for product, words in WORDS.items():
        for i in range(narratives_per_product):
            rows.append(
                {
                    "Complaint ID": f"{len(rows) + 1000}",
                    "Product": product,
                    "Consumer complaint narrative": f"{words} complaint number {i}",
                }
            )
    blanks = ["", "   ", "\u3000", "\n"]  # an ideographic space is blank after NFKC
    for i in range(empty):
        rows.insert(
            3 * i,
            {
                "Complaint ID": f"{9000 + i}",
                "Product": list(WORDS)[i % 3],
                "Consumer complaint narrative": blanks[i % len(blanks)],
            },
        )
    return write_manifest(root, rows, fmt="csv")


def cfpb_args(csv, runs, *extra):
    return [
        "fit",
        "--config",
        str(ROOT / "configs" / "demo.yaml"),
        "--config",
        str(ROOT / "configs" / "text_only.yaml"),
        "--data.train",
        str(csv),
        "--data.id_column",
        "Complaint ID",
        "--data.text_columns",
        '["Consumer complaint narrative"]',
        "--data.attachments_column",
        "none",
        "--data.tasks",
        '[{"name": "product", "column": "Product"}]',
        "--data.val",
        "null",
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


@pytest.fixture(scope="module")
def cfpb_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cfpb")
    csv = cfpb_shaped(root / "export")
    return csv, ComplaintCLI(args=cfpb_args(csv, root / "runs"))


def test_an_export_with_empty_narratives_trains_without_them(cfpb_run, caplog):
    csv, cli = cfpb_run
    splits = cli.datamodule.splits
    assert len(splits["train"]) + len(splits["val"]) == 30
    assert all(r.id < "9000" for split in splits.values() for r in split)
    with caplog.at_level(logging.INFO):  # the split says so in one line, with the first ids
        ComplaintCLI(args=cfpb_args(csv, cli.run_dir.parent.parent, "--trainer.fast_dev_run", "true"))
    said = [r.getMessage() for r in caplog.records if "no readable attachment" in r.getMessage()]
    assert len(said) == 1 and "12 of 42 records" in said[0] and "ids 9000, 9001, 9002, 9003, 9004, ..." in said[0]


def test_keep_no_evidence_keeps_todays_behaviour(cfpb_run, tmp_path):
    csv, _ = cfpb_run
    cli = ComplaintCLI(
        args=cfpb_args(csv, tmp_path, "--data.keep_no_evidence", "true", "--trainer.fast_dev_run", "true")
    )
    assert len(cli.datamodule.splits["train"]) + len(cli.datamodule.splits["val"]) == 42


def test_records_without_evidence_get_no_prediction(cfpb_run, tmp_path, capsys):
    csv, cli = cfpb_run
    out = tmp_path / "p.jsonl"
    assert infer("--checkpoint", cli.run_dir, "--input", csv, "--output", out) == 0
    rows = read_jsonl(out)
    assert len(rows) == 42
    empty = [r for r in rows if r["id"] >= "9000"]
    assert len(empty) == 12
    for r in empty:
        assert r["status"] == "error" and r["product"] is None and r["product_confidence"] is None
        assert r["warnings"] == ["no_input: no text (the model reads text only)"] and r["needs_review"]
    assert all(r["product"] is not None for r in rows if r["id"] < "9000")
    assert "error 12 (12 of them no_input" in capsys.readouterr().out


def test_a_multimodal_model_predicts_a_photo_only_record_but_not_a_broken_photo(trained_run, tmp_path, capsys):
    media = tmp_path / "archive" / "media"
    media.mkdir(parents=True)
    (media / "ok.jpg").write_bytes(image_bytes())
    (media / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    write_manifest(
        tmp_path / "archive",
        [
            {"id": "photo", "text": "", "attachments": ["media/ok.jpg"]},
            {"id": "broken", "text": " ", "attachments": ["media/broken.jpg"]},
            {"id": "nothing", "text": ""},
            {"id": "text", "text": "the screen arrived cracked"},
        ],
    )
    assert infer("--checkpoint", trained_run, "--input", tmp_path / "archive", "--output", tmp_path / "p.jsonl") == 0
    rows = {r["id"]: r for r in read_jsonl(tmp_path / "p.jsonl")}
    assert rows["photo"]["status"] == "ok" and rows["text"]["status"] == "ok"
    for rid in ("broken", "nothing"):
        assert rows[rid]["category"] is None
        assert "no_input: no text and no readable attachment" in rows[rid]["warnings"]
    assert any(w.startswith("unsupported: media/broken.jpg") for w in rows["broken"]["warnings"])

    capsys.readouterr()
    assert doctor([str(tmp_path / "archive"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    shown = report["record_problems"][NO_EVIDENCE]
    assert shown["count"] == 2 and {e["id"] for e in shown["examples"]} == {"broken", "nothing"}


def rare_archive(root):
    rows = [{"id": f"m{i}", "text": f"escrow loan {i}", "product": "Mortgage"} for i in range(12)]
    rows += [{"id": f"d{i}", "text": f"collector debt {i}", "product": "Debt collection"} for i in range(12)]
    rows += [
        {"id": "c1", "text": "consumer loan", "product": "Consumer Loan"},
        {"id": "c2", "text": "another consumer loan", "product": "Consumer Loan"},
        {"id": "p1", "text": "payday", "product": "Payday loan"},
    ]
    return write_manifest(root, rows).parent


@pytest.mark.parametrize("mode", ["keep", "other", "drop"])
def test_rare_classes_in_each_mode(mode, tmp_path, caplog):
    from pipeline.data.datamodule import ComplaintDataModule
    from pipeline.data.labels import IGNORE_INDEX, LabelSpace, Task
    from pipeline.data.records import Record

    train = rare_archive(tmp_path / "train")
    val = write_manifest(
        tmp_path / "val",
        [
            {"id": "v1", "text": "escrow", "product": "Mortgage"},
            {"id": "v2", "text": "consumer", "product": "Consumer Loan"},
            {"id": "v3", "text": "student", "product": "Student loan"},
        ],
    ).parent
    tasks = [Task("product", "product")]
    dm = ComplaintDataModule.from_keys(
        train=str(train), tasks=tasks, val=None, rare_classes=mode, num_workers=0, cache_dir=str(tmp_path / "cache")
    )
    with caplog.at_level(logging.INFO):
        classes = dm.task_classes["product"]  # the seeded split keeps a one-record class in training: no crash
    said = [r.getMessage() for r in caplog.records if "fewer than 5 training records" in r.getMessage()]
    assert len(said) == 1 and "'Consumer Loan' (2)" in said[0] and "'Payday loan' (1)" in said[0]
    saved = LabelSpace.load(dm.artifacts_dir / "labels.json")
    encode = lambda label: int(saved.encode(Record("x", "", [], {"product": label}, "t"))["product"])  # noqa: E731
    if mode == "keep":
        assert classes == ["Consumer Loan", "Debt collection", "Mortgage", "Payday loan"]
        with pytest.raises(ValueError, match="Student loan"):  # a label training never saw stays an error
            _ = ComplaintDataModule.from_keys(
                train=str(train), tasks=tasks, val=str(val), num_workers=0, cache_dir=str(tmp_path / "c2")
            ).task_classes
    elif mode == "other":
        assert classes == ["Debt collection", "Mortgage", "other"]
        assert saved.merged == {"product": ["Consumer Loan", "Payday loan"]}
        assert encode("Payday loan") == encode("Student loan") == classes.index("other")
        assert dm.class_counts["product"][classes.index("other")] == sum(
            r.labels["product"] in ("Consumer Loan", "Payday loan") for r in dm.splits["train"]
        )
    else:
        assert classes == ["Debt collection", "Mortgage"]
        assert saved.dropped == {"product": ["Consumer Loan", "Payday loan"]}
        assert encode("Consumer Loan") == encode("Student loan") == IGNORE_INDEX
    if mode != "keep":  # with a rule for rare labels, a validation archive with unseen labels trains
        other = ComplaintDataModule.from_keys(
            train=str(train),
            tasks=tasks,
            val=str(val),
            rare_classes=mode,
            num_workers=0,
            cache_dir=str(tmp_path / "c3"),
        )
        assert other.task_classes["product"] == classes


def test_evaluation_scores_a_merged_label_as_other():
    from pipeline.data.labels import LabelSpace, Task
    from pipeline.inference.evaluate import Evaluation

    labels = LabelSpace([Task("p", "p")], {"p": ["a", "b", "other"]}, merged={"p": ["rare"]})
    evaluation = Evaluation({"p": labels.classes["p"]}, labels)
    for true, said in [("a", "a"), ("rare", "other"), ("b", "a")]:
        evaluation.add({"status": "ok", "p": said, "p_true": true})
    result = evaluation.results()["p"]
    assert result["acc"] == pytest.approx(2 / 3) and result["unknown_true_labels"] == []


LONG = (
    "The parcel arrived three weeks late and the box was crushed on one side. I called customer service twice "
    "and nobody answered; the refund form on the website returns an error every time I submit it."
)


def test_exact_and_near_duplicate_leakage_on_a_hand_made_archive(tmp_path, capsys, caplog):
    from pipeline.data.datamodule import ComplaintDataModule
    from pipeline.data.labels import Task

    train = [
        {"id": "t1", "text": LONG, "label": "a"},
        {"id": "t2", "text": "屏幕碎了，要求退款。快递员态度很差。", "label": "b"},
        {"id": "t3", "text": LONG.upper().replace(" ", "  "), "label": "a"},
    ]  # t3 repeats t1
    train += [
        {"id": f"f{i}", "text": f"filler complaint number {i} about billing", "label": "ab"[i % 2]} for i in range(10)
    ]
    test = [
        {"id": "x1", "text": "  " + LONG.lower() + " "},  # exact after normalisation
        {"id": "x2", "text": LONG.replace("three weeks", "two weeks")},  # near
        {"id": "x3", "text": "屏幕碎了，要求退款。快递员态度很差！"},  # near, in Chinese
        {"id": "x4", "text": "my card was charged twice for one order"},
        {"id": "x5", "text": ""},
    ]
    write_manifest(tmp_path / "train", train)
    write_manifest(tmp_path / "test", [dict(r, label="a") for r in test])

    assert doctor([str(tmp_path / "train"), "--against", str(tmp_path / "test"), "--json"]) == 0
    leakage = json.loads(capsys.readouterr().out)["leakage"]
    assert leakage["exact"] == 1 and leakage["exact_examples"] == [["t1", "x1"]]
    assert leakage["near"] == 2 and {tuple(p[:2]) for p in leakage["near_examples"]} == {("t1", "x2"), ("t2", "x3")}
    assert all(0.8 <= p[2] < 1 for p in leakage["near_examples"])

    def fit_start(**options):
        dm = ComplaintDataModule.from_keys(
            train=str(tmp_path / "train"),
            tasks=[Task("label", "label")],
            val=str(tmp_path / "train"),
            test=str(tmp_path / "test"),
            num_workers=0,
            cache_dir=str(tmp_path / "cache"),
            **options,
        )
        with caplog.at_level(logging.INFO):
            _ = dm.task_classes  # reads the labels
        return dm

    caplog.clear()
    fit_start()
    said = [r.getMessage() for r in caplog.records if "also in training" in r.getMessage()]
    assert len(said) == 2  # validation (here the training archive itself) and test
    assert said[1].startswith("data.test: 3 of 4 texts also in training") and "t1 = x1" in said[1]
    caplog.clear()
    deduped = fit_start(dedupe=True)
    assert [r.id for r in deduped.splits["train"]][:3] == ["t1", "t2", "f0"]
    assert any(
        "1 training record(s) repeat an earlier text" in r.getMessage() and "t3 (= t1)" in r.getMessage()
        for r in caplog.records
    )


PII = {  # kind: (value, where it sits in a sentence)
    "EMAIL": "li.wei+orders@example.com",
    "PHONE": "+1 (415) 555-0132",
    "CARD": "4111 1111 1111 1111",
    "IBAN": "DE89 3704 0044 0532 0130 00",
    "CN_ID": "11010519491231002X",
    "URL": "https://shop.example.cn/orders?id=77",
}


@pytest.mark.parametrize(
    "text, expected",
    [
        (f"Email me at {PII['EMAIL']} or call {PII['PHONE']}.", "Email me at [EMAIL] or call [PHONE]."),
        ("请拨打 13812345678 或 010-62345678 联系我", "请拨打 [PHONE] 或 [PHONE] 联系我"),
        (f"My card {PII['CARD']} was charged twice", "My card [CARD] was charged twice"),
        (f"卡号{PII['CARD'].replace(' ', '')}被扣款两次", "卡号[CARD]被扣款两次"),
        (f"Refund to {PII['IBAN']} or GB82WEST12345698765432 please", "Refund to [IBAN] or [IBAN] please"),
        (f"身份证号{PII['CN_ID']}，地址见 {PII['URL']}", "身份证号[CN_ID]，地址见 [URL]"),
        ("see www.example.org/help and mail zhang@163.com", "see [URL] and mail [EMAIL]"),
    ],
)
def test_redaction_replaces_each_kind_in_english_and_chinese(text, expected):
    from pipeline.data.redact import redact

    assert redact(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    [
        "Order #2023100588172 placed on 2023-10-15, total $1,299.00, order number 1234567890123456.",
        "订单号 202310158817266 于 2023年10月15日 支付 ¥1299.00 元，快递单号 SF1234567890123",
        "Invoice 4111 1111 1111 1112 (not a card: its Luhn digit is wrong), account 110105194912310021",
        "DE89 3704 0044 0532 0130 01 fails the IBAN checksum; call me at ext. 4417",
    ],
)
def test_order_numbers_dates_and_prices_stay(text):
    from pipeline.data.redact import redact

    assert redact(text) == (text, {})


def test_each_kind_can_be_switched_off():
    from pipeline.data.redact import check_types, redact

    text = f"{PII['EMAIL']} {PII['URL']}"
    assert redact(text, ["URL"])[0] == f"{PII['EMAIL']} [URL]"
    with pytest.raises(ValueError, match="PASSPORT"):
        check_types(["EMAIL", "PASSPORT"])


def gps_jpeg() -> bytes:
    import io

    from PIL import Image

    im = Image.new("RGB", (40, 30), (200, 30, 30))
    exif = im.getexif()
    exif.get_ifd(0x8825).update({1: "N", 2: (52.0, 30.0, 0.0)})
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif)
    return buf.getvalue()


def test_planted_personal_data_never_reaches_the_run_folder_or_the_cache(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rows = []
    for i in range(30):
        kind = list(PII)[i % len(PII)]
        label, words = ("refund", "money back refund") if i % 2 else ("delivery", "parcel late courier")
        rows.append(
            {
                "id": f"r{i}",
                "text": f"{words} {i}, contact {PII[kind]} 谢谢",
                "label": label,
                "attachments": ["media/gps.jpg"] if i == 0 else [],
            }
        )
    archive = tmp_path / "archive"
    write_manifest(archive, rows)
    (archive / "media").mkdir()
    (archive / "media" / "gps.jpg").write_bytes(gps_jpeg())

    assert doctor([str(archive), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["personal_data"] == {"URL": 5, "EMAIL": 5, "IBAN": 5, "CARD": 5, "CN_ID": 5, "PHONE": 5}
    assert report["attachments_with_gps"] == 1
    assert not any(value in json.dumps(report, ensure_ascii=False) for value in PII.values())

    cli = ComplaintCLI(
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
            str(archive),
            "--data.tasks",
            '[{"name": "label", "column": "label"}]',
            "--data.num_workers",
            "0",
            "--trainer.max_epochs",
            "1",
            "--runs_root",
            str(tmp_path / "runs"),
        ]
    )
    out = cli.run_dir / "predictions.jsonl"
    assert (
        infer(
            "--checkpoint",
            cli.run_dir,
            "--input",
            archive,
            "--output",
            out,
            "--explain",
            cli.run_dir / "report",
            "--explain-limit",
            "0",
        )
        == 0
    )
    vocab = json.loads((cli.run_dir / "tokenizer" / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    assert "[" in vocab and "email" in vocab  # the placeholders were seen
    needles = [v.encode() for v in PII.values()] + [v.replace(" ", "").encode() for v in PII.values()]
    needles += [b"5550132", b"0532013000", b"555-0132", b"li.wei"]
    files = [p for folder in (cli.run_dir, tmp_path / "cache") for p in folder.rglob("*") if p.is_file()]
    assert len(files) > 20
    leaked = [(p, n) for p in files for n in needles if n in p.read_bytes()]
    assert leaked == []
