"""Multimodal complaint analysis: text + photo + video evidence -> several labels at once."""

from pipeline.core.provenance import __version__

__all__ = ["ComplaintAnalyzer", "__version__"]


def __getattr__(name):
    # Lazy, so that `python -m pipeline.doctor` does not pay for loading the model code.
    if name == "ComplaintAnalyzer":
        from pipeline.inference.analyzer import ComplaintAnalyzer

        return ComplaintAnalyzer
    raise AttributeError(name)
