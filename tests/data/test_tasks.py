"""Task data loaders: classification / NER / QA / seq2seq / chat files, the named datasets, splits, cache."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from lmforge.assets import check_asset
from lmforge.data import (
    TaskDataConfig,
    assign_split,
    bible_en_ja_splits,
    bio_to_bioes,
    bioes_to_bio,
    load_chat,
    load_classification,
    load_pairs,
    load_squad,
    load_summarization,
    load_task_data,
    load_token_classification,
    peoples_daily_ner_splits,
    spans_to_tags,
    validation_bucket,
    zh_sentiment_splits,
)
from lmforge.data.cache import cached_splits
from lmforge.data.ner import parse_peoples_daily_line
from lmforge.data.seq2seq import KOUGO_BOOKS
from lmforge.errors import DataError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path_factory.mktemp("cache")))


def _needs(*assets: str) -> None:
    for name in assets:
        if not check_asset(name)["installed"]:
            pytest.skip(f"asset {name} is not installed")


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ classification files


def test_csv_string_labels_pairs_and_quoted_newline(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "train.csv",
        'premise,hypothesis,gold\nA man sleeps.,"Someone\nrests.",entail\nIt rains.,It is dry.,contradict\n'
        "Cats purr.,Dogs bark.,neutral\n",
    )
    data = load_classification(
        path, text_column="premise", text_pair_column="hypothesis", label_column="gold"
    )
    assert data.label_names == ["contradict", "entail", "neutral"]
    assert [e.label for e in data.examples] == [1, 0, 2]
    assert data.examples[0].text_pair == "Someone\nrests."  # the quoted newline survives
    assert [e.line for e in data.examples] == [2, 4, 5]  # a record's first line


def test_integer_labels_sort_numerically_and_fixed_label_names(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.tsv", "text\tlabel\nfine\t10\nbad\t2\nok\t2\n")
    data = load_classification(path)
    assert data.label_names == ["2", "10"]  # numeric order, not "10" < "2"
    assert [e.label for e in data.examples] == [1, 0, 0]
    test = load_classification(path, label_names=["10", "2", "7"])  # a trained model's classes
    assert [e.label for e in test.examples] == [0, 1, 1]
    with pytest.raises(DataError, match=r"t.tsv:2: label '10' is not one of"):
        load_classification(path, label_names=["2"])


def test_tsv_has_no_quoting(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.tsv", 'text\tlabel\nsays "hi\tpos\n')
    assert load_classification(path).texts == ['says "hi']


def test_jsonl_multilabel_with_separator_and_lists(tmp_path: Path) -> None:
    rows = [
        {"text": "a", "tags": "sports|politics"},
        {"text": "b", "tags": ["politics"]},
        {"text": "c", "tags": ""},
    ]
    path = _write(tmp_path / "m.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    data = load_classification(path, label_column="tags", label_separator="|")
    assert data.multi_label and data.label_names == ["politics", "sports"]
    assert [e.label for e in data.examples] == [(0, 1), (0,), ()]
    assert data.label_counts() == {"politics": 2, "sports": 1}


def test_bad_rows_name_file_and_line_or_are_skipped(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.csv", "text,label\ngood,pos\n,neg\nfine,neg,extra\nok,\nlast,pos\n")
    with pytest.raises(DataError, match=r"bad.csv:3: empty text field 'text'"):
        load_classification(path)
    data = load_classification(path, on_error="skip")
    assert data.texts == ["good", "last"]
    assert data.info["skipped"] == 3
    assert any("bad.csv:4: 3 fields" in m for m in data.info["skipped_examples"])
    with pytest.raises(DataError, match=r"bad.csv:1: no column 'review'"):
        load_classification(path, text_column="review")


def test_undecodable_line_and_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes(b"text,label\ncaf\xe9,pos\nok,neg\n")
    with pytest.raises(DataError, match=r"latin.csv:2: not valid UTF-8"):
        load_classification(path)
    assert load_classification(path, on_error="skip").texts == ["ok"]
    with pytest.raises(DataError, match="unknown data format"):
        load_classification(_write(tmp_path / "x.xlsx", ""))


def test_gzipped_jsonl_and_limit(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": f"t{i}", "label": i % 2}) + "\n" for i in range(10))
    data = load_classification(path, limit=4)
    assert len(data) == 4 and data.label_names == ["0", "1"]


# ------------------------------------------------------------------ splits and cache


def test_assign_split_is_a_function_of_the_text_and_nests_with_prepare() -> None:
    texts = [f"document number {i}" for i in range(4000)]
    splits = [assign_split(t) for t in texts]
    assert splits == [assign_split(t) for t in texts]
    share = {s: splits.count(s) / len(texts) for s in ("train", "validation", "test")}
    assert 0.08 < share["test"] < 0.12 and 0.08 < share["validation"] < 0.12
    # prepare()'s validation (bucket < fraction) holds every test text once fraction >= test share
    assert all(validation_bucket(t) < 0.1 for t, s in zip(texts, splits) if s == "test")
    with pytest.raises(DataError):
        assign_split("x", 0.6, 0.5)


def test_cache_writes_once_and_rebuilds_a_damaged_file(tmp_path: Path) -> None:
    source = _write(tmp_path / "src.txt", "abc")
    calls = []

    def build() -> tuple[dict, dict]:
        calls.append(1)
        return {"train": [{"x": 1}], "validation": [], "test": [{"x": 2}]}, {"n": 2}

    args = {"sources": [source], "asset": {"name": "t"}, "settings": {"f": 0.1}, "builder_version": 1}
    first, manifest = cached_splits("toy", build=build, **args)
    second, again = cached_splits("toy", build=build, **args)
    assert len(calls) == 1 and first == second and again["from_cache"]
    assert again["sources"][0]["sha256"] == manifest["sources"][0]["sha256"]
    assert again["splits"]["test"]["count"] == 1
    (Path(manifest["folder"]) / "train.jsonl").write_text("tampered\n")
    third, rebuilt = cached_splits("toy", build=build, **args)
    assert len(calls) == 2 and third == first and not rebuilt["from_cache"]
    _write(source, "abcd")  # a new asset version: new fingerprint, new folder
    assert cached_splits("toy", build=build, **args)[1]["folder"] != manifest["folder"]


# ------------------------------------------------------------------ NER


def test_tag_schemes_round_trip() -> None:
    spans = [("PER", 0, 3), ("LOC", 4, 5), ("ORG", 5, 7)]
    bio = spans_to_tags(8, spans, "BIO")
    bioes = spans_to_tags(8, spans, "BIOES")
    assert bio == ["B-PER", "I-PER", "I-PER", "O", "B-LOC", "B-ORG", "I-ORG", "O"]
    assert bioes == ["B-PER", "I-PER", "E-PER", "O", "S-LOC", "B-ORG", "E-ORG", "O"]
    assert bio_to_bioes(bio) == bioes and bioes_to_bio(bioes) == bio
    with pytest.raises(DataError, match="overlaps"):
        spans_to_tags(4, [("PER", 0, 2), ("LOC", 1, 3)])


def test_peoples_daily_bracketed_compound_is_one_entity() -> None:
    text, spans = parse_peoples_daily_line(
        "[中国/ns  政府/n]nt  主席/n  江/nr  泽民/nr  访问/v  [香港/ns  特别/a  行政区/n]ns  和/c  "
        "[北京/ns  大学/n]l  ［/w"
    )
    assert text == "中国政府主席江泽民访问香港特别行政区和北京大学［"
    assert spans == [("ORG", 0, 4), ("PER", 6, 9), ("LOC", 11, 18), ("LOC", 19, 21)]
    # a bracket of another tag (l: idiom) keeps the entities inside it: 北京/ns stays LOC
    with pytest.raises(ValueError, match="not word/POS"):
        parse_peoples_daily_line("好/a  坏")


def test_token_classification_jsonl_and_conll(tmp_path: Path) -> None:
    rows = [{"tokens": ["John", "lives", "here"], "tags": ["B-PER", "O", "O"]}, {"tokens": ["x"], "tags": []}]
    path = _write(tmp_path / "ner.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"ner.jsonl:2: .*equal length \(1 tokens, 0 tags\)"):
        load_token_classification(path)
    data = load_token_classification(path, on_error="skip")
    assert data.label_names == ["O", "B-PER", "I-PER"] and data.entity_counts() == {"PER": 1}
    conll = _write(tmp_path / "d.conll", "-DOCSTART- O\n\nEU NNP B-ORG\nrejects VBZ O\n\nPeter NNP X-PER\n")
    with pytest.raises(DataError, match=r"d.conll:6: tag 'X-PER'"):
        load_token_classification(conll)
    assert [e.tags for e in load_token_classification(conll, on_error="skip").examples] == [("B-ORG", "O")]


def test_peoples_daily_ner_real_asset_first_lines() -> None:
    _needs("peoples-daily")
    splits = peoples_daily_ner_splits(limit=2000)
    total = sum(len(s) for s in splits.values())
    assert 1500 < total <= 2000 and len(splits["test"]) > 100
    train = splits["train"]
    assert train.label_names == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    counts = train.entity_counts()
    assert counts["PER"] > 500 and counts["LOC"] > 500 and counts["ORG"] > 50
    example = next(e for e in train.examples if "江泽民" in "".join(e.tokens))
    start = "".join(example.tokens).index("江泽民")
    assert example.tags[start : start + 3] == ("B-PER", "I-PER", "I-PER")  # surname + given name
    bioes = peoples_daily_ner_splits(scheme="BIOES", limit=2000)["train"]
    assert [bioes_to_bio(e.tags) for e in bioes.examples[:50]] == [list(e.tags) for e in train.examples[:50]]
    sentences = {"".join(e.tokens) for s in splits.values() for e in s.examples}
    assert len(sentences) == total  # deduplicated


# ------------------------------------------------------------------ QA


def _squad(tmp_path: Path, answers: list[dict], impossible: bool = False) -> Path:
    context = "The Eiffel Tower is in Paris. It opened in 1889."
    qas = [
        {"id": "q1", "question": "Where is it?", "answers": answers},
        {"id": "q2", "question": "Who built Rome?", "answers": [], "is_impossible": impossible},
    ]
    document = {"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}]}
    return _write(tmp_path / "squad.json", json.dumps(document))


def test_squad_v2_answers_offsets_and_impossible(tmp_path: Path) -> None:
    data = load_squad(
        _squad(tmp_path, [{"text": "Paris", "answer_start": 23}, {"text": "1889", "answer_start": 42}], True)
    )
    first, second = data.examples
    assert first.answers[0].start == 23 and first.answers[1].start == 43  # one character off: moved
    assert second.is_impossible and second.answers == () and data.has_impossible
    assert data.info["answers_moved"] == 1 and data.version == "v2.0"


def test_squad_errors_name_the_question(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"qas\[0\] \(id q1\).*'Rome' is not in the context"):
        load_squad(_squad(tmp_path, [{"text": "Rome", "answer_start": 0}], True))
    with pytest.raises(DataError, match=r"qas\[1\] \(id q2\).*no answers and not is_impossible"):
        load_squad(_squad(tmp_path, [{"text": "Paris", "answer_start": 23}]))
    assert len(load_squad(_squad(tmp_path, [{"text": "Paris", "answer_start": 23}]), on_error="skip")) == 1


# ------------------------------------------------------------------ seq2seq and chat


def test_summarization_and_pairs(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "s.jsonl", json.dumps({"document": "Long text.", "summary": "Short."}) + "\n{}\n"
    )
    with pytest.raises(DataError, match=r"s.jsonl:2: missing or empty text field 'document'"):
        load_summarization(path)
    data = load_pairs(path, on_error="skip")  # document/summary found without naming them
    assert [(e.source, e.target) for e in data.examples] == [("Long text.", "Short.")]
    csv_path = _write(tmp_path / "p.csv", "en,ja\nhello,こんにちは\n")
    assert load_pairs(csv_path, source_column="en", target_column="ja").examples[0].target == "こんにちは"


def test_bible_en_ja_alignment_on_first_lines() -> None:
    _needs("web-bible", "kougo-bible")
    splits = bible_en_ja_splits(limit=3000)
    stats = splits["train"].info["manifest"]["stats"]
    assert stats["aligned"] > 2900 and stats["skipped"] == 0  # Genesis and most of Exodus line up
    pairs = {e.id: e for s in splits.values() for e in s.examples}
    first = pairs["Ge 1:1"]
    assert first.source == "In the beginning God created the heavens and the earth."  # footnote gone
    assert first.target.startswith("元始に神天地を")
    assert not any("{" in e.source or "[" in e.source for e in pairs.values())
    assert splits["test"].target_language == "ja"
    reverse = bible_en_ja_splits(limit=3000, direction="ja-en")["train"].examples[0]
    assert reverse.source == splits["train"].examples[0].target
    assert len(KOUGO_BOOKS) == 66


def test_chat_messages_and_instruction_records(tmp_path: Path) -> None:
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
            ]
        },
        {"instruction": "Translate", "input": "chat", "output": "cat"},
        {"messages": [{"role": "user", "content": "only a question"}]},
        {"messages": [{"role": "robot", "content": "x"}]},
    ]
    path = _write(tmp_path / "c.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"c.jsonl:3: no non-empty assistant message"):
        load_chat(path)
    data = load_chat(path, on_error="skip")
    assert len(data) == 2 and data.info["skipped"] == 2
    assert data.examples[1].as_dicts() == [
        {"role": "user", "content": "Translate\n\nchat"},
        {"role": "assistant", "content": "cat"},
    ]


# ------------------------------------------------------------------ named datasets and dispatch


def test_zh_sentiment_splits_are_cached_disjoint_and_deduplicated() -> None:
    _needs("zh-sentiment")
    splits = zh_sentiment_splits()
    sizes = {name: len(data) for name, data in splits.items()}
    stats = splits["train"].info["manifest"]["stats"]
    assert stats["dropped_in_both_classes"] == 47
    assert sum(sizes.values()) == stats["kept"] == 17358
    texts = [set(d.texts) for d in splits.values()]
    assert sum(map(len, texts)) == 17358  # no duplicate anywhere, no text in two splits
    assert 1500 < sizes["test"] < 1900 and splits["test"].label_names == ["negative", "positive"]
    again = load_task_data("classification", "zh-sentiment", split="test")
    assert again.info["manifest"]["from_cache"] and again.texts == splits["test"].texts


def test_load_task_data_dispatch_and_errors(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", "review,stars\ngreat,5\nawful,1\n")
    config = TaskDataConfig(text_column="review", label_column="stars")
    assert load_task_data("classification", path, config=config).label_names == ["1", "5"]
    with pytest.raises(DataError, match="unknown task"):
        load_task_data("regression", path)
    with pytest.raises(DataError, match="not a named dataset"):
        load_task_data("classification", tmp_path / "missing.csv")
    with pytest.raises(DataError, match="is a classification dataset, not seq2seq"):
        load_task_data("seq2seq", "zh-sentiment")
