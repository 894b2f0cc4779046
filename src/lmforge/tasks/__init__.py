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

Pretraining objectives (``objective.kind`` of a pretraining recipe) are
:class:`~lmforge.tasks.pretraining.PretrainingTask` s in a registry of their own
(:func:`~lmforge.tasks.pretraining.get_objective`): ``causal_lm``
(:mod:`~lmforge.tasks.causal_pretraining`), ``masked_lm`` with NSP / SOP
(:mod:`~lmforge.tasks.masked_lm`) and ``span_corruption`` (:mod:`~lmforge.tasks.span_corruption`),
over the token corpora of :mod:`~lmforge.tasks.corpus`.

Example:
    >>> from lmforge.tasks import get_task
    >>> get_task("classification").head
    'sequence_classification'
"""

from lmforge.tasks import (  # noqa: F401  (each module registers its task)
    causal,
    causal_pretraining,
    classification,
    masked_lm,
    qa,
    seq2seq,
    span_corruption,
    token_classification,
)
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
from lmforge.tasks.pretraining import PretrainingTask, get_objective, objective_names, register_objective
from lmforge.tasks.sources import ExampleSource, TaskSource

__all__ = [
    "LOWER_IS_BETTER",
    "ExampleSource",
    "PretrainingTask",
    "Task",
    "TaskSettings",
    "TaskSource",
    "TaskSplit",
    "get_objective",
    "get_task",
    "objective_names",
    "register_objective",
    "register_task",
    "task_for_model",
    "task_names",
]
