"""``infer.py --devices N``: Lightning's DDP shards the blocks over N processes of this machine; each process
writes its blocks' chunks (one process, the usual case, runs without Lightning: see :mod:`pipeline.inference.run`)."""

from __future__ import annotations

import time

import pytorch_lightning as pl

from pipeline.data.tensor_batches import batch_to_device
from pipeline.inference.chunk_writer import ChunkWriter


class DeviceShard(pl.LightningModule):
    """A predictor (eager or onnxruntime) behind Lightning's ``predict_step``."""

    def __init__(self, predictor):
        super().__init__()
        self.predictor = predictor

    def predict_step(self, batch: dict, batch_idx: int = 0, dataloader_idx: int = 0) -> dict:
        return self.predictor.predict_step(batch_to_device(batch, self.device))


class WriteChunks(pl.Callback):
    def __init__(self, writer: ChunkWriter):
        self.writer = writer

    def on_predict_start(self, trainer, pl_module):
        self.writer.world_size, self.writer.show_progress = trainer.world_size, trainer.is_global_zero

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.started = time.perf_counter()

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.writer.write(outputs, batch, time.perf_counter() - self.started)


def distributed_trainer(device: str, devices: int) -> pl.Trainer:
    return pl.Trainer(
        accelerator=device,
        devices=devices,
        strategy="ddp",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )


def predict_on_devices(trainer: pl.Trainer, predictor, loader, writer: ChunkWriter) -> None:
    trainer.callbacks.append(WriteChunks(writer))
    trainer.predict(DeviceShard(predictor), dataloaders=loader, return_predictions=False)
