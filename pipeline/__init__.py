"""Multimodal complaint analysis: text + photo + video evidence -> several labels at once."""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy, so that `import pipeline.doctor` does not pay for loading the model code.
    if name == "ComplaintAnalyzer":
        from pipeline.inference.predictor import ComplaintAnalyzer

        return ComplaintAnalyzer
    raise AttributeError(name)
