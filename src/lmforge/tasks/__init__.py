"""Tasks: one module per fine-tuning task, each a :class:`Task` found by name in one registry.

=========================  =====================================  ===============================
task                       module                                 head
=========================  =====================================  ===============================
``classification``         :mod:`~lmforge.tasks.classification`     ``sequence_classification``
``token-classification``   :mod:`~lmforge.tasks.token_classification`  ``token_classification``
``qa``                     :mod:`~lmforge.tasks.qa`                 ``question_answering``
``seq2seq``                :mod:`~lmforge.tasks.seq2seq`            ``seq2seq_lm``
``lm``, ``chat``           :mod:`~lmforge.tasks.causal`             ``causal_lm``
=========================  =====================================  ===============================

Example:
    >>> from lmforge.tasks import get_task
    >>> get_task("classification").head
    'sequence_classification'
"""

from lmforge.tasks import causal, classification, qa, seq2seq, token_classification  # noqa: F401  (registers)
from lmforge.tasks.base import (
    LOWER_IS_BETTER,
    Task,
    TaskSettings,
    TaskSplit,
    get_task,
    register_task,
    task_for_model,
    task_names,
)
from lmforge.tasks.sources import ExampleSource, TaskSource

__all__ = [
    "LOWER_IS_BETTER",
    "ExampleSource",
    "Task",
    "TaskSettings",
    "TaskSource",
    "TaskSplit",
    "get_task",
    "register_task",
    "task_for_model",
    "task_names",
]
