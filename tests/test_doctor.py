import json

from factory import pack_bad
from pipeline.tools import doctor


def run(capsys, *argv):
    code = doctor.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_healthy_archive(tmp_path, capsys):
    from test_dataset import make_archive

    arch = make_archive(tmp_path / "ok")
    code, out, _ = run(capsys, arch, "--label-column", "cat", "--json")
    report = json.loads(out)
    assert code == 0
    assert report["records"] == 24 and report["usable_records"] == 24
    assert report["attachment_failures"] == {} and report["record_problems"] == {}
    assert report["attachments_by_kind"] == {"image": 24, "video": 12}
    assert report["labels"] == {"cat": {"a": 8, "b": 8, "c": 8}}


def test_broken_archive_reports_every_problem_with_ids(bad, capsys, tmp_path):
    root, expected = bad
    for path in (root, pack_bad(root, "zip"), pack_bad(root, "tar")):
        code, out, _ = run(capsys, path, "--json")
        report = json.loads(out)
        assert code == 0 and report["records"] == len(expected)
        failing = {ex["id"] for p in report["attachment_failures"].values() for ex in p["examples"]}
        counted = sum(p["count"] for p in report["attachment_failures"].values())
        assert counted == sum(1 for r in expected.values() if r != "ok")  # one failing attachment per bad case
        assert report["attachment_failures"]["outside_archive"]["count"] == 4
        assert {"traversal", "absolute", "symlink_out", "zip_slip"} <= {
            ex["id"] for ex in report["attachment_failures"]["outside_archive"]["examples"]
        }
        assert failing  # examples carry complaint ids
    code, out, _ = run(capsys, root)
    assert "outside_archive: 4" in out and "id=traversal" in out


def test_duplicates_and_malformed_lines(tmp_path, capsys):
    (tmp_path / "complaints.jsonl").write_text(
        '{"id": "1", "text": "a"}\n{oops\n{"id": "1", "text": "b"}\n{"id": "2", "text": ""}\n'
    )
    code, out, _ = run(capsys, tmp_path, "--json")
    report = json.loads(out)
    assert code == 0 and report["records"] == 4 and report["usable_records"] == 1  # "2" has no evidence
    assert [e["id"] for e in report["record_problems"][doctor.NO_EVIDENCE]["examples"]] == ["2"]
    assert report["record_problems"]["duplicate id"]["count"] == 1
    assert report["record_problems"]["malformed JSON"]["count"] == 1
    assert report["record_problems"]["empty text"]["examples"][0]["id"] == "2"


def test_unreadable_archive_one_line_nonzero(tmp_path, capsys):
    code, out, err = run(capsys, tmp_path / "nope")
    assert code == 2 and out == "" and err.strip().count("\n") == 0 and "not found" in err
    (tmp_path / "complaints.csv").write_text("id,body\n1,x\n")
    code, _, err = run(capsys, tmp_path)
    assert code == 2 and "columns found: ['id', 'body']" in err
