"""The model worker: a trained run behind LitServe. Each complaint is read as ``infer.py`` reads an archive's
record (redaction, text encoding, attachment typing and limits) and predicted with the same model and review band;
requests that arrive together are predicted as one batch.
"""

from __future__ import annotations

import base64
import logging
import warnings
from dataclasses import replace
from pathlib import Path

import litserve as ls

from pipeline.data.manifest import record_from_dict
from pipeline.data.memory_archive import MemoryArchive
from pipeline.data.record_blocks import BlockBuilder
from pipeline.inference.analyzer import ComplaintAnalyzer, load_for
from pipeline.inference.defaults import AnalyzerOptions

SOURCE = "request"  # the rows' source: where infer.py names the archive and line
# A batch's texts are padded to a multiple of this many tokens (the encoders ignore padding): with every length its
# own input shape, oneDNN's cache of compiled kernels (one per shape, up to 1,024) grew the worker 50 MB in a soak.
LENGTH_STEP = 16


class ComplaintAPI(ls.LitAPI):
    def __init__(
        self,
        run: str | Path,
        options: AnalyzerOptions,
        threads: int,
        max_batch_size: int = 1,
        batch_timeout: float = 0.0,
    ):
        with warnings.catch_warnings():  # LitServe's note that batch() goes unused at a batch size of 1
            warnings.filterwarnings("ignore", message="The LitServer has both batch and unbatch")
            super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.run, self.options, self.threads = run, options, threads

    def setup(self, device: str) -> None:
        if self.options.backend == "torch":
            import torch

            torch.set_num_threads(self.threads)
        options = AnalyzerOptions(**{**self.options.__dict__, "device": device})
        self.analyzer = ComplaintAnalyzer(load_for(self.run, options.backend), options)
        featurizer = self.analyzer.featurizer()
        collator = replace(self.analyzer.collator(), length_step=LENGTH_STEP, max_length=featurizer.max_text_length)
        self.build = BlockBuilder(featurizer, collator)
        self.columns, self.limits = self.analyzer.run.columns, self.analyzer.run.media.limits
        self.run_id = self.analyzer.run.run_dir.name
        self.predict(self.decode_request({"id": "warm-up", "text": "warm up", "attachments": []}))  # first call's cost
        logging.getLogger("litserve.loops.simple_loops").addFilter(
            lambda r: "waiting in the queue for too long" not in r.getMessage()
        )  # the client has its 504

    def decode_request(self, request: dict) -> tuple:
        """A complaint the guard checked: its record and its attachments as an archive in memory."""
        files = {a["name"]: base64.b64decode(a["data"]) for a in request["attachments"]}
        record = record_from_dict(
            {"id": request["id"], "text": request["text"], "attachments": [a["name"] for a in request["attachments"]]},
            SOURCE,
            self.columns,
        )
        return MemoryArchive(files, self.limits), record

    def batch(self, inputs: list) -> list:
        return inputs

    def predict(self, inputs):
        """Rows for one complaint, or for a batch of them (one bad record fails alone, as in an archive)."""
        many = isinstance(inputs, list)
        pending = [(i, archive, record) for i, (archive, record) in enumerate(inputs if many else [inputs])]
        rows = self.analyzer.predict_batch(self.build(0, pending))
        return rows if many else rows[0]

    def unbatch(self, rows: list) -> list:
        return rows

    def encode_response(self, row: dict) -> dict:
        return {**row, "run": self.run_id}
