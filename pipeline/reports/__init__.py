"""Metrics files and plots written beside a run or a prediction file."""
