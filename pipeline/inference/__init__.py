"""Batch inference: load a trained run, stream archives through it, write one row per record."""
