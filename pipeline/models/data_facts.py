"""What a model learns of its data before it is built: vocabulary, classes, class counts."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DataFacts:
    """Linked from the data module by ``train.py`` (never typed in YAML), and kept in the checkpoint.

    Args:
        vocab_size: tokens in the tokenizer's vocabulary.
        task_classes: per task, its class names in index order.
        class_counts: per task, training records per class (for class balancing).
        multilabel_tasks: the tasks whose records may hold several labels.
        pad_id: the padding token's id.
    """

    vocab_size: int = 2
    task_classes: dict[str, list[str]] = field(default_factory=dict)
    class_counts: dict[str, list[int]] = field(default_factory=dict)
    multilabel_tasks: tuple[str, ...] = ()
    pad_id: int = 0

    @property
    def num_classes(self) -> dict[str, int]:
        return {task: len(classes) for task, classes in self.task_classes.items()}
