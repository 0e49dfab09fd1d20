"""Complaint archives in, model-ready batches out."""
