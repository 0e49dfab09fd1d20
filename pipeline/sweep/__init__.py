"""Optuna sweeps over train.py configs: python -m pipeline.sweep SWEEP.yaml."""
