"""The share of ``[UNK]`` tokens a pretrained folder's tokenizer gives an archive's texts, as published and as
this project loads it (``load_tokenizer``: lower-casing added where the vocabulary needs it).

    python bench/bench_unknown_tokens.py FOLDER ARCHIVE

e.g. m3e-small (``python -m pipeline.weights get m3e-small``) on the waimai validation split that
``bench/bench_distill.py --datasets waimai`` writes (``bench/out/distill/waimai/val``).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path


def unknown_rate(tokenizer, texts: list[str]) -> str:
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    total = sum(len(x) for x in ids)
    unknown = sum(i == tokenizer.unk_token_id for x in ids for i in x)
    texts_with = sum(tokenizer.unk_token_id in x for x in ids)
    return f"{unknown:,}/{total:,} tokens [UNK] ({unknown / total:.2%}), in {texts_with:,} of {len(texts):,} texts"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path)
    p.add_argument("archive", type=Path)
    args = p.parse_args()
    from transformers import AutoTokenizer

    from pipeline.data.archive import open_archive
    from pipeline.data.manifest import read_records
    from pipeline.data.records import Columns
    from pipeline.data.text import load_tokenizer

    texts = [r.text for r in read_records(open_archive(args.archive), Columns()) if r.text]
    latin = sum(bool(re.search("[A-Za-z]", t)) for t in texts)
    print(f"{args.archive}: {len(texts):,} texts, {latin:,} with Latin letters")
    print(f"as published: {unknown_rate(AutoTokenizer.from_pretrained(args.folder), texts)}")
    print(f"load_tokenizer: {unknown_rate(load_tokenizer(str(args.folder)), texts)}")


if __name__ == "__main__":
    main()
