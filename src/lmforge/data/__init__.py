"""Data stage: raw text -> cleaned, deduplicated, split documents -> token memmaps for pretraining,
and the examples of every fine-tuning task (files or named datasets, deterministic cached splits).

``prepare`` writes a directory that ``TokenDataset`` reads; see :mod:`lmforge.data.dataset` for the
layout and :mod:`lmforge.data.readers` for the input formats and built-in corpora.
``load_task_data`` reads classification / NER / QA / seq2seq / chat data; see
:mod:`lmforge.data.tasks` for the formats and the named datasets (``zh-sentiment``,
``peoples-daily-ner``, ``bible-en-ja``).
"""

from lmforge.data.cache import cache_root
from lmforge.data.chat import ChatData, ChatExample, ChatMessage, load_chat
from lmforge.data.classification import (
    ClassificationData,
    ClassificationExample,
    load_classification,
    load_zh_sentiment,
    zh_sentiment_splits,
)
from lmforge.data.clean import (
    SPLIT_NAMES,
    Deduplicator,
    assign_split,
    clean_text,
    normalized_key,
    validation_bucket,
)
from lmforge.data.dataset import TokenDataset
from lmforge.data.lm import LMData, LMExample, load_lm_texts
from lmforge.data.ner import (
    TokenClassificationData,
    TokenClassificationExample,
    bio_to_bioes,
    bioes_to_bio,
    load_peoples_daily_ner,
    load_token_classification,
    peoples_daily_ner_splits,
    spans_to_tags,
)
from lmforge.data.pipeline import PrepareSettings, prepare
from lmforge.data.qa import QAAnswer, QAData, QAExample, load_squad
from lmforge.data.readers import ErrorLog, Source, iter_texts, read_source, resolve_inputs
from lmforge.data.seq2seq import (
    Seq2SeqData,
    Seq2SeqExample,
    bible_en_ja_splits,
    load_bible_en_ja,
    load_pairs,
    load_summarization,
)
from lmforge.data.tasks import TASK_DATASETS, TASKS, TaskDataConfig, load_task_data

__all__ = [
    "SPLIT_NAMES",
    "TASKS",
    "TASK_DATASETS",
    "ChatData",
    "ChatExample",
    "ChatMessage",
    "ClassificationData",
    "ClassificationExample",
    "Deduplicator",
    "LMData",
    "LMExample",
    "ErrorLog",
    "PrepareSettings",
    "QAAnswer",
    "QAData",
    "QAExample",
    "Seq2SeqData",
    "Seq2SeqExample",
    "Source",
    "TaskDataConfig",
    "TokenClassificationData",
    "TokenClassificationExample",
    "TokenDataset",
    "assign_split",
    "bible_en_ja_splits",
    "bio_to_bioes",
    "bioes_to_bio",
    "cache_root",
    "clean_text",
    "iter_texts",
    "load_bible_en_ja",
    "load_chat",
    "load_classification",
    "load_lm_texts",
    "load_pairs",
    "load_peoples_daily_ner",
    "load_squad",
    "load_summarization",
    "load_task_data",
    "load_token_classification",
    "load_zh_sentiment",
    "normalized_key",
    "peoples_daily_ner_splits",
    "prepare",
    "read_source",
    "resolve_inputs",
    "spans_to_tags",
    "validation_bucket",
    "zh_sentiment_splits",
]
