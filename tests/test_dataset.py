import numpy as np
import pytest
import torch

from factory import image_bytes, pack_bad, video_bytes, write_manifest
from pipeline.data.archive import open_archive
from pipeline.data.collate import Collator
from pipeline.data.datamodule import ComplaintDataModule
from pipeline.data.dataset import StreamingComplaintDataset
from pipeline.data.featurizer import Featurizer
from pipeline.data.labels import IGNORE_INDEX, Task
from pipeline.data.manifest import read_records
from pipeline.data.media import MediaSpec
from pipeline.data.records import Columns, Record
from pipeline.data.split import stratified_split
from pipeline.data.text import train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["complaint 快递 broken screen refund"] * 3, vocab_size=100)


@pytest.mark.parametrize("kind", ["folder", "zip", "tar"])
def test_bad_archive_every_record_kept_with_its_reason(bad, tokenizer, kind):
    root, expected = bad
    path = root if kind == "folder" else pack_bad(root, kind)
    before = sorted(p.name for p in root.parent.iterdir())
    archive = open_archive(path)
    featurize = Featurizer(tokenizer, MediaSpec(image_size=16, video_frames=2))
    seen = {}
    for record in read_records(archive, Columns()):
        sample = featurize(record, archive)
        seen[record.id] = sample
        assert sample["text_ids"].size > 0  # the text survives whatever the attachments did
    assert set(seen) == set(expected)
    for rid, reason in expected.items():
        warnings = seen[rid]["warnings"]
        if reason == "ok":
            assert warnings == [] and len(seen[rid]["images"]) == 1 and len(seen[rid]["videos"]) == 1
            continue
        wanted = reason.split(":")[1].split("|") if reason.startswith("zip:") else [reason]
        wanted = wanted[:1] if kind == "zip" else wanted[-1:]
        assert any(w.startswith(wanted[0] + ":") for w in warnings), (rid, warnings)
    assert len(seen["partial"]["images"]) == 1  # the good photo of a partly bad record is kept
    assert sorted(p.name for p in root.parent.iterdir()) == before  # nothing written beside the archive


def sample(n_text, n_img, n_vid, label=None):
    s = {
        "id": "x",
        "source": "s",
        "error": None,
        "warnings": [],
        "text_ids": np.arange(1, n_text + 1),
        "images": [np.full((3, 8, 8), 7, dtype=np.uint8)] * n_img,
        "image_paths": [],
        "videos": [np.full((2, 3, 8, 8), 9, dtype=np.uint8)] * n_vid,
        "video_paths": [],
    }
    if label is not None:
        s["labels"] = {"cat": np.array(label)}
    return s


def test_collate_shapes_and_masks():
    batch = Collator(pad_id=0, image_size=8, video_frames=2)([sample(3, 2, 0, 1), sample(1, 0, 1, 0), sample(0, 0, 0)])
    assert all(isinstance(batch[k], np.ndarray) for k in ("text_ids", "text_lengths", "images", "video_mask"))
    assert batch["text_ids"].shape == (3, 3) and batch["text_lengths"].tolist() == [3, 1, 0]
    assert batch["text_ids"][1].tolist() == [1, 0, 0]
    assert batch["images"].shape == (3, 2, 3, 8, 8)
    assert batch["image_mask"].tolist() == [[True, True], [False, False], [False, False]]
    assert batch["videos"].shape == (3, 1, 2, 3, 8, 8)
    assert batch["video_mask"].tolist() == [[False], [True], [False]]
    assert batch["labels"]["cat"].tolist() == [1, 0, IGNORE_INDEX]
    assert batch["images"][1].sum() == 0 and batch["ids"] == ["x", "x", "x"]


def test_collate_batch_without_any_attachment():
    batch = Collator(image_size=8, video_frames=2)([sample(2, 0, 0)])
    assert batch["images"].shape == (1, 1, 3, 8, 8) and not batch["image_mask"].any()


def test_collate_for_a_model_without_media_holds_no_pixels():
    batch = Collator(image_size=128, video_frames=8, media=False)([sample(2, 0, 0), sample(3, 0, 0)])
    assert batch["images"].shape == (2, 1, 3, 0, 0) and batch["videos"].shape == (2, 1, 8, 3, 0, 0)
    assert not batch["image_mask"].any() and not batch["video_mask"].any()
    assert batch["text_ids"].shape == (2, 3)


def test_block_tokenized_in_one_call_equals_record_by_record(tokenizer):
    records = [
        Record("a", "broken screen refund", [], {}, "s"),
        Record("b", "", [], {}, "s"),
        Record("c", "快递 complaint " * 40, [], {}, "s"),
        Record("d", "x", [], {}, "s", error="bad row"),
    ]
    calls = []

    def counted(texts, **options):
        calls.append(texts)
        return tokenizer(texts, **options)

    featurize = Featurizer(
        counted, MediaSpec(image_size=16, video_frames=2), max_text_length=16, read_media=False, mark_no_input=True
    )
    block = featurize.many([(r, None) for r in records])
    assert calls == [["broken screen refund", "快递 complaint " * 40]]  # the readable texts, in one call
    alone = [featurize(r, None) for r in records]
    assert [s["text_ids"].tolist() for s in block] == [s["text_ids"].tolist() for s in alone]
    assert len(block[2]["text_ids"]) == 16 and block[1]["text_ids"].size == 0 and block[3]["text_ids"].size == 0
    assert block[1]["error"].startswith("no_input") and block[3]["error"] == "bad row"


def test_a_record_that_breaks_its_block_fails_alone(tokenizer):
    records = [Record(str(i), f"complaint {i}", [], {}, "s") for i in range(5)]

    class Breaks(Featurizer):
        def _without_text(self, record, archive):
            if record.id == "3" and record.error is None:
                raise RuntimeError("boom")
            return super()._without_text(record, archive)

    featurize = Breaks(tokenizer, MediaSpec(image_size=16, video_frames=2), read_media=False)
    stream = StreamingComplaintDataset(
        lambda: ((None, r) for r in records), featurize, Collator(image_size=16, video_frames=2, media=False), block=8
    )
    (batch,) = list(stream)
    assert batch["ids"] == ["0", "1", "2", "3", "4"]
    assert batch["errors"][3] == "unexpected error: RuntimeError: boom"
    assert [e is None for e in batch["errors"]] == [True, True, True, False, True]
    assert batch["text_lengths"].tolist()[:3] == [2, 2, 2] and batch["text_lengths"][3] == 0


def test_stratified_split_is_seeded_and_stratified():
    records = [Record(str(i), "t", [], {"c": "a" if i < 80 else "b"}, "") for i in range(100)]
    key = lambda r: r.labels["c"]  # noqa: E731
    train, val = stratified_split(records, key, 0.2, seed=3)
    assert len(val) == 20 and sum(r.labels["c"] == "b" for r in val) == 4
    assert [r.id for r in stratified_split(records, key, 0.2, seed=3)[1]] == [r.id for r in val]
    assert [r.id for r in stratified_split(records, key, 0.2, seed=4)[1]] != [r.id for r in val]


def make_archive(root, n=24, labels=("a", "b", "c")):
    (root / "media").mkdir(parents=True)
    (root / "media" / "p.jpg").write_bytes(image_bytes(size=(20, 20)))
    (root / "media" / "v.mp4").write_bytes(video_bytes(frames=4, size=16))
    rows = [
        {
            "id": f"r{i}",
            "text": f"complaint number {i} 快递",
            "cat": labels[i % len(labels)],
            "attachments": ["media/p.jpg"] * (i % 3) + ["media/v.mp4"] * (i % 2),
        }
        for i in range(n)
    ]
    write_manifest(root, rows)
    return root


def test_datamodule_split_batches_and_vocab_cache(tmp_path):
    arch = make_archive(tmp_path / "arch")
    kwargs = dict(
        train=str(arch),
        tasks=[Task("cat", "cat")],
        batch_size=4,
        num_workers=0,
        image_size=16,
        video_frames=2,
        vocab_size=200,
        cache_dir=str(tmp_path / "cache"),
    )
    dm = ComplaintDataModule.from_keys(**kwargs)
    assert dm.task_classes == {"cat": ["a", "b", "c"]} and dm.vocab_size > 2
    dm.setup("fit")
    assert len(dm.splits["train"]) + len(dm.splits["val"]) == 24
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape[2:] == (3, 16, 16) and batch["videos"].shape[2:] == (2, 3, 16, 16)
    assert batch["labels"]["cat"].shape == (4,)
    again = ComplaintDataModule.from_keys(**kwargs)
    assert again.vocab_size == dm.vocab_size and again.artifacts_dir == dm.artifacts_dir
    dm.export_vocabularies(tmp_path / "run")
    assert (tmp_path / "run" / "tokenizer" / "tokenizer.json").is_file() and (
        tmp_path / "run" / "labels.json"
    ).is_file()


def test_datamodule_unknown_validation_label(tmp_path):
    train = make_archive(tmp_path / "train", labels=("a", "b"))
    val = make_archive(tmp_path / "val", labels=("a", "zzz"))
    dm = ComplaintDataModule.from_keys(
        train=str(train), val=str(val), tasks=[Task("cat", "cat")], num_workers=0, cache_dir=str(tmp_path / "c")
    )
    with pytest.raises(ValueError, match=r"unknown \['zzz'\]"):
        dm.setup("fit")


def test_unusable_training_records_are_reported(tmp_path):
    arch = make_archive(tmp_path / "arch")
    with open(arch / "complaints.jsonl", "a") as f:
        f.write("{broken\n")
    dm = ComplaintDataModule.from_keys(
        train=str(arch), tasks=[Task("cat", "cat")], num_workers=0, cache_dir=str(tmp_path / "c")
    )
    with pytest.warns(UserWarning, match=r"1 unusable record\(s\).*line 25: malformed JSON"):
        dm.setup("fit")
    assert len(dm.splits["train"]) + len(dm.splits["val"]) == 24


def test_preload_keeps_exact_samples_within_budget(tmp_path):
    from pipeline.data.dataset import ComplaintDataset

    arch = make_archive(tmp_path / "arch")
    dm = ComplaintDataModule.from_keys(
        train=str(arch),
        tasks=[Task("cat", "cat")],
        num_workers=0,
        image_size=16,
        video_frames=2,
        cache_dir=str(tmp_path / "c"),
        sample_cache_mb=64,
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    ds = dm.datasets["train"]
    assert len(ds.cache) == len(ds) and loader.num_workers == 0
    fresh, kept = ds.featurizer(ds.records[5], ds.archives[5]), ds[5]
    assert np.array_equal(fresh["text_ids"], kept["text_ids"])
    assert all(np.array_equal(a, b) for a, b in zip(fresh["images"] + fresh["videos"], kept["images"] + kept["videos"]))
    assert len(fresh["images"]) == len(kept["images"]) and len(fresh["videos"]) == len(kept["videos"])
    small = ComplaintDataset(ds.records, ds.archives, ds.featurizer)
    small.preload(budget_mb=0.01, num_workers=2)  # ~10 KB: a few samples only
    assert 0 < len(small.cache) < len(small)
    # cached samples from the workers hold no shared memory (each tensor would keep a file descriptor open)
    arrays = [t for c in small.cache.values() for t in [c["text_ids"], *c["images"], *c["videos"]]]
    assert all(isinstance(t, np.ndarray) for t in arrays)
    last = len(small) - 1  # beyond the budget: decoded on demand, same result
    assert np.array_equal(small[last]["text_ids"], ds.featurizer(ds.records[last], ds.archives[last])["text_ids"])


class OneBuiltBatch(torch.utils.data.IterableDataset):
    def __init__(self, batch: dict):
        self.batch = batch

    def __iter__(self):
        yield self.batch


def test_a_worker_sends_small_arrays_inline_large_ones_as_tensors_and_they_come_back_as_they_were():
    from torch.utils.data import DataLoader

    from pipeline.data.tensor_batches import INLINE_BYTES, batch_to_device, for_transfer

    built = {  # as the collator makes them
        "text_ids": np.arange(12).reshape(3, 4),
        "image_mask": np.array([[True], [False], [True]]),
        "images": np.full((3, 1, 3, 400, 400), 7, dtype=np.uint8),
        "labels": {"t": np.array([0, -100, 2])},
        "ids": ["a", "b", "c"],
        "block": 5,
    }
    assert built["images"].nbytes >= INLINE_BYTES > built["text_ids"].nbytes
    received = next(iter(DataLoader(OneBuiltBatch(built), batch_size=None, num_workers=1, collate_fn=for_transfer)))
    assert isinstance(received["text_ids"], np.ndarray) and isinstance(received["labels"]["t"], np.ndarray)
    assert isinstance(received["images"], torch.Tensor)  # large: shared memory, not copied through the pipe
    restored = batch_to_device(received, "cpu")
    for key in ("text_ids", "image_mask", "images"):
        assert isinstance(restored[key], torch.Tensor) and np.array_equal(restored[key].numpy(), built[key])
    assert np.array_equal(restored["labels"]["t"].numpy(), built["labels"]["t"])
    assert restored["ids"] == ["a", "b", "c"] and restored["block"] == 5
