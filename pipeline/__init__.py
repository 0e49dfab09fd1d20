"""Multimodal complaint analysis: text + photo + video evidence -> several labels at once."""

__version__ = "0.1.0"
