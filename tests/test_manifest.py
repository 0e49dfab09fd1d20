import tracemalloc

import pytest

from factory import write_manifest
from pipeline.data.archive import ArchiveError, open_archive
from pipeline.data.manifest import ManifestReader, read_records
from pipeline.data.records import Columns

ROWS = [
    {
        "id": "a1",
        "title": "Late",
        "body": 'parcel late\nsecond line, "quoted"',
        "attachments": ["m/1.jpg", "m/2.mp4"],
        "cat": "delivery",
    },
    {"id": "a2", "title": "", "body": "退款没到账", "attachments": [], "cat": None},
]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_each_manifest_format(tmp_path, fmt):
    write_manifest(tmp_path, ROWS, fmt)
    cols = Columns(text=("title", "body"), labels=("cat",))
    records = list(read_records(open_archive(tmp_path), cols))
    assert [r.id for r in records] == ["a1", "a2"]
    assert records[0].text == 'Late\n\nparcel late\nsecond line, "quoted"'
    assert records[1].text == "退款没到账"
    assert records[0].attachments == ["m/1.jpg", "m/2.mp4"]
    assert records[1].attachments == []
    assert records[0].labels == {"cat": "delivery"} and records[1].labels == {"cat": None}


def test_manifest_file_given_directly_and_row_ids(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text('label,review\n1,好吃\n0,"太慢了\n真的"\n', encoding="utf-8")
    reader = ManifestReader(open_archive(path), Columns(text=("review",), labels=("label",)))
    records = list(reader)
    assert [(r.id, r.text, r.labels["label"]) for r in records] == [("1", "好吃", "1"), ("2", "太慢了\n真的", "0")]
    assert records[1].source == "reviews.csv:row 2"
    assert any("row numbers" in n for n in reader.notes)


def test_csv_attachments_separator_and_json_list(tmp_path):
    (tmp_path / "complaints.csv").write_text(
        'id,text,attachments\n1,a,"x.jpg; y.jpg"\n2,b,"[""z.jpg""]"\n3,c,\n', encoding="utf-8"
    )
    records = list(read_records(open_archive(tmp_path), Columns()))
    assert [r.attachments for r in records] == [["x.jpg", "y.jpg"], ["z.jpg"], []]


def test_bad_rows_become_error_records(tmp_path):
    (tmp_path / "complaints.jsonl").write_text(
        '{"id": "1", "text": "ok"}\n{not json\n[1, 2]\n{"id": "1", "text": "again"}\n{"text": "no id"}\n',
        encoding="utf-8",
    )
    records = list(read_records(open_archive(tmp_path), Columns()))
    assert [r.error is None for r in records] == [True, False, False, False, False]
    assert "malformed JSON" in records[1].error and records[1].source.endswith("line 2")
    assert records[3].error == "duplicate id: '1' appeared earlier"
    assert "no id" in records[4].error


def test_missing_text_column_lists_columns_found(tmp_path):
    write_manifest(tmp_path, [{"id": "1", "body": "x"}])
    with pytest.raises(ArchiveError, match=r"columns found: \['id', 'body'\]"):
        list(read_records(open_archive(tmp_path), Columns()))


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_manifest_streams(tmp_path, fmt):
    """Memory while iterating does not grow with the manifest: 20x the rows, about the same peak."""

    def peak(n):
        d = tmp_path / f"{fmt}{n}"
        rows = [{"id": str(i), "text": "complaint text " * 20, "attachments": ["m/a.jpg"]} for i in range(n)]
        write_manifest(d, rows, fmt)
        tracemalloc.start()
        count = 0
        for _ in read_records(open_archive(d), Columns(id=None)):  # no id set kept
            count += 1
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert count == n
        return top

    small, large = peak(1000), peak(20000)
    assert large < small * 2, (small, large)


def test_csv_field_over_the_size_limit_loses_only_its_row(tmp_path):
    import csv

    (tmp_path / "complaints.csv").write_text("id,text\na,fine\nb," + "x" * 5000 + "\nc,after\n", encoding="utf-8")
    limit = csv.field_size_limit(1000)
    try:
        records = list(read_records(open_archive(tmp_path), Columns(attachments=None)))
    finally:
        csv.field_size_limit(limit)
    assert [(r.id, r.error) for r in records] == [
        ("a", None),
        (None, "malformed CSV: field larger than field limit (1000)"),
        ("c", None),
    ]
