import pytest
from transformers import AutoTokenizer

from pipeline.data.labels import IGNORE_INDEX, LabelSpace, Task, UnknownLabelError
from pipeline.data.records import Record
from pipeline.data.text import TextTokenizer, encode_many, load_tokenizer, train_tokenizer
from pipeline.data.tokenizer_file import TokenizerFile, read_tokenizer

TEXTS = ["快递很慢，屏幕碎了 The screen arrived CRACKED", "ｒｅｆｕｎｄ please 退款 refund"] * 5


def test_cjk_characters_are_tokens_and_nfkc_applies():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    pieces = tok.convert_ids_to_tokens(encode_many(tok, ["快递很慢 CRACKED ｒｅｆｕｎｄ"], 64)[0])
    assert pieces == ["快", "递", "很", "慢", "cracked", "refund"]
    assert tok.unk_token_id not in encode_many(tok, ["屏幕碎了"], 64)[0]


def test_save_and_load_with_auto_tokenizer_offline(tmp_path):
    tok = train_tokenizer(TEXTS, vocab_size=300)
    tok.save_pretrained(str(tmp_path))
    assert (tmp_path / "tokenizer.json").is_file()
    again = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    text = "快递 refund 屏幕"
    assert encode_many(again, [text], 64)[0] == encode_many(tok, [text], 64)[0]
    assert again.decode(encode_many(again, [text], 64)[0]) == "快 递 refund 屏 幕"
    assert load_tokenizer(tmp_path).pad_token_id == 0


def test_truncation_keeps_the_start():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    full = encode_many(tok, [TEXTS[0]], 1000)[0]
    assert encode_many(tok, [TEXTS[0]], 5)[0] == full[:5]
    assert encode_many(tok, [""], 5)[0] == []


def test_load_tokenizer_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path)


def rec(rid, **labels):
    return Record(rid, "t", [], labels, f"x:line {rid}")


def test_label_space_fit_encode_and_missing_labels(tmp_path):
    tasks = [Task("cat", "category"), Task("tags", "tags", type="multilabel", separator="|")]
    train = [rec("1", category="b", tags="x|y"), rec("2", category="a", tags="y"), rec("3", category=None, tags=None)]
    space = LabelSpace.fit(tasks, train)
    assert space.classes == {"cat": ["a", "b"], "tags": ["x", "y"]}
    enc = space.encode(train[0])
    assert enc["cat"].item() == 1 and enc["tags"].tolist() == [1.0, 1.0]
    missing = space.encode(train[2])
    assert missing["cat"].item() == IGNORE_INDEX and missing["tags"].tolist() == [-1.0, -1.0]
    space.save(tmp_path / "labels.json")
    again = LabelSpace.load(tmp_path / "labels.json")
    assert again.classes == space.classes and again.encode(train[1])["tags"].tolist() == [0.0, 1.0]


def test_class_counts_in_class_order_ignore_missing_and_unknown():
    tasks = [Task("cat", "category"), Task("tags", "tags", type="multilabel", separator="|")]
    train = [rec("1", category="b", tags="x|y"), rec("2", category="b", tags="y"), rec("3", category="a", tags=None)]
    space = LabelSpace.fit(tasks, train)
    more = [rec("4", category=None, tags="y|zzz"), rec("5", category="zzz", tags=None)]
    assert space.counts(train + more) == {"cat": [1, 2], "tags": [1, 3]}


def test_unknown_label_lists_unknown_and_known():
    space = LabelSpace.fit([Task("cat", "category")], [rec("1", category="a"), rec("2", category="b")])
    with pytest.raises(UnknownLabelError, match=r"unknown \['zzz'\] \(known: \['a', 'b'\]\)"):
        space.check([rec("3", category="zzz")], "data.val")
    with pytest.raises(UnknownLabelError, match="record 3"):
        space.encode(rec("3", category="zzz"))


def test_single_class_task_rejected():
    with pytest.raises(ValueError, match="at least 2"):
        LabelSpace.fit([Task("cat", "category")], [rec("1", category="a")])


def test_bad_task_type():
    with pytest.raises(ValueError, match="multilabel"):
        Task("x", "x", type="regression")


@pytest.mark.parametrize("kind", ["ours", "bert"])
def test_a_runs_tokenizer_file_reads_texts_as_transformers_does(kind, tiny_bert_dir, tmp_path):
    """Prediction reads a run's tokenizer with the tokenizers library alone: the same ids, truncation,
    padding id, vocabulary size and tokens as transformers' tokenizer of the same folder."""
    folder = tiny_bert_dir if kind == "bert" else tmp_path
    if kind == "ours":
        train_tokenizer(TEXTS, vocab_size=300).save_pretrained(str(folder))
    light, full = read_tokenizer(folder), load_tokenizer(folder)
    assert isinstance(light, TokenizerFile)
    texts = TEXTS + ["", "The screen arrived CRACKED, 退款!", "ｒｅｆｕｎｄ " * 40]
    for length in (3, 64):
        assert (
            TextTokenizer(light, length)(texts)
            == full(texts, add_special_tokens=False, truncation=True, max_length=length)["input_ids"]
        )
    ids = encode_many(full, texts[:1], 64)[0]
    assert light.convert_ids_to_tokens(ids) == full.convert_ids_to_tokens(ids)
    assert (light.pad_token_id, len(light)) == (full.pad_token_id, len(full))


def test_a_folder_without_a_padding_token_goes_to_transformers_which_names_it(tmp_path):
    train_tokenizer(TEXTS, vocab_size=300).save_pretrained(str(tmp_path))
    config = tmp_path / "tokenizer_config.json"
    config.write_text(config.read_text().replace('"pad_token": "[PAD]"', '"pad_token": null'))
    with pytest.raises(ValueError, match="no padding token"):
        read_tokenizer(tmp_path)
