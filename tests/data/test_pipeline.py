"""Tests for lmforge.data: readers, cleaning, deduplication, split, token memmaps and their errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lmforge.assets import check_asset
from lmforge.cli import app
from lmforge.data import (
    Deduplicator,
    ErrorLog,
    TokenDataset,
    clean_text,
    prepare,
    read_source,
    resolve_inputs,
)
from lmforge.data.dataset import token_dtype
from lmforge.data.readers import strip_bible_footnotes, strip_pos_tags
from lmforge.errors import DataError, LmforgeError
from lmforge.tokenizers import Tokenizer, TokenizerTrainConfig, train_tokenizer

ENGLISH = [
    f"Sentence number {i} tells of the {['red', 'green', 'blue'][i % 3]} lamp and light {i * 7}."
    for i in range(200)
]
CHINESE = [
    "我们热爱中国政府。",
    "中国人民发表新年讲话。",
    "今天天气很好，我们去公园散步。",
    "政府工作报告",
] * 3


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return train_tokenizer(ENGLISH + CHINESE, TokenizerTrainConfig("wordpiece", 400, family="bert"))


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(ENGLISH) + "\n", encoding="utf-8")
    return path


def _records(path: Path, column: str | None = None, on_error: str = "raise") -> tuple[list[str], ErrorLog]:
    errors = ErrorLog(on_error)  # type: ignore[arg-type]
    texts = [
        text for source in resolve_inputs([str(path)], column) for _, text in read_source(source, errors)
    ]
    return texts, errors


# --------------------------------------------------------------------------- readers
def test_readers_for_every_format(tmp_path: Path) -> None:
    rows = ["first text", "second, with a comma", 'third "quoted"']
    (tmp_path / "a.txt").write_text("\ufeff" + "\n".join(rows) + "\n", encoding="utf-8")
    jsonl = "\n".join(json.dumps({"id": i, "body": r}) for i, r in enumerate(rows)) + "\n\n"
    (tmp_path / "b.jsonl").write_text(jsonl, encoding="utf-8")
    csv_text = "id,body\n" + "".join(f'{i},"{r.replace(chr(34), 2 * chr(34))}"\n' for i, r in enumerate(rows))
    (tmp_path / "c.csv").write_text(csv_text, encoding="utf-8")
    for name, data in (("d.txt.gz", "\n".join(rows)), ("e.jsonl.gz", jsonl), ("f.csv.gz", csv_text)):
        (tmp_path / name).write_bytes(gzip.compress(data.encode()))
    for name in ("a.txt", "b.jsonl", "c.csv", "d.txt.gz", "e.jsonl.gz", "f.csv.gz"):
        assert _records(tmp_path / name, "body")[0] == rows, name
    assert _records(tmp_path / "c.csv", "1")[0] == rows  # a CSV column by 0-based index


def test_builtin_corpora_are_cleaned() -> None:
    assert strip_pos_tags("[中国/ns  政府/n]nt  今天/t  发表/v  讲话/n") == [
        "中国",
        "政府",
        "今天",
        "发表",
        "讲话",
    ]
    assert (
        strip_bible_footnotes('Adam,{"Adam" and "Man" are spelled the same.} in the day')
        == "Adam, in the day"
    )
    for asset, check in (
        ("peoples-daily", lambda t: "/" not in t and t.startswith("迈向充满希望的新世纪")),
        ("web-bible", lambda t: t == "In the beginning God created the heavens and the earth."),
    ):
        if not check_asset(asset)["ok"]:
            pytest.skip(f"asset {asset} missing: {check_asset(asset)['install_command']}")
        sources = resolve_inputs([asset])
        first = next(iter(read_source(sources[0], ErrorLog())))[1]
        assert check(first), first
    assert [s.path.name for s in resolve_inputs(["zh-sentiment"])] == ["pos.txt", "neg.txt"]


def test_cleaning_and_dedup_counts_on_a_hand_example() -> None:
    assert clean_text("Ｈｅｌｌｏ\u3000ｗｏｒｌｄ１２") == "Hello world12"  # NFKC folds full width
    assert clean_text("<p class='x'>Tom &amp; Jerry</p><br/>  ok\x07\u200b") == "Tom & Jerry ok"
    assert clean_text("  a \t b \n\n\n c  ") == "a b\nc"
    assert clean_text("x < y and y > z") == "x < y and y > z"  # not a tag
    texts = ["Hello world", "Hello world", "hello, WORLD!", "Other text", "Other  text", "other"]
    dedup = Deduplicator()
    kept = [t for t in texts if dedup.is_new(t)]
    assert kept == ["Hello world", "Other text", "other"]
    assert (dedup.exact, dedup.normalized) == (1, 2)


# --------------------------------------------------------------------------- prepare + TokenDataset
def test_prepare_writes_memmaps_the_reader_api_reads(tokenizer: Tokenizer, tmp_path: Path) -> None:
    first, second = tmp_path / "one.txt", tmp_path / "two.jsonl"
    first.write_text("\n".join(ENGLISH[:120]) + "\n" + ENGLISH[0] + "\n\n", encoding="utf-8")
    second.write_text("\n".join(json.dumps({"text": t}) for t in ENGLISH[120:]), encoding="utf-8")
    out = tmp_path / "data"
    report = prepare([str(first), str(second)], tokenizer, out, validation_fraction=0.2, workers=1)
    assert report["report"]["duplicates_exact"] == 1 and report["report"]["documents"] == 200
    assert report["dtype"] == "uint16" and report["vocab_size"] == tokenizer.vocab_size
    assert report["special_tokens"]["mask_token"] == 4 and report["special_tokens"]["pad_token"] == 0
    assert [s["input"] for s in report["sources"]] == [str(first), str(second)]

    train, validation = TokenDataset(out, "train"), TokenDataset(out, "validation")
    assert train.num_documents + validation.num_documents == 200
    assert 20 <= validation.num_documents <= 60  # 20% by hash
    assert train.tokens.dtype == np.uint16 and train.offsets.dtype == np.int64
    assert train.offsets[0] == 0 and train.offsets[-1] == train.num_tokens == len(train.tokens)
    # Every distinct text is in exactly one split (the ids are checked exactly in the next test).
    roundtrip = sorted(tokenizer.decode(tokenizer.encode(t)) for t in ENGLISH)
    decoded = [
        Tokenizer.from_dir(split.tokenizer_dir).decode(split.document(i))
        for split in (train, validation)
        for i in range(len(split))
    ]
    assert sorted(decoded) == roundtrip
    sources = np.asarray(train.source_ids)
    assert set(sources.tolist()) == {0, 1} and np.all(np.diff(sources) >= 0)  # one source after the other
    assert train.word_starts(0) is None
    assert Tokenizer.from_dir(train.tokenizer_dir).encode("red lamp") == tokenizer.encode("red lamp")


def test_document_ids_equal_direct_encoding_and_workers_agree(
    tokenizer: Tokenizer, corpus: Path, tmp_path: Path
) -> None:
    one = prepare([str(corpus)], tokenizer, tmp_path / "w1", workers=1, word_segmentation="whitespace")
    two = prepare([str(corpus)], tokenizer, tmp_path / "w2", workers=2, word_segmentation="whitespace")
    for name in ("train.tokens.bin", "train.words.bin", "validation.tokens.bin"):
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes()
    assert one["fingerprint"] == two["fingerprint"]
    dataset, held_out = TokenDataset(tmp_path / "w2"), TokenDataset(tmp_path / "w2", "validation")
    validation = {tokenizer.decode(held_out.document(i)) for i in range(len(held_out))}
    train_texts = [t for t in ENGLISH if tokenizer.decode(tokenizer.encode(t)) not in validation]
    assert len(train_texts) == dataset.num_documents
    for i, text in enumerate(train_texts):
        expected = tokenizer.encode(text, add_special_tokens=False)
        assert dataset.document(i).tolist() == expected
        starts = dataset.word_starts(i)
        tokens = [tokenizer.backend.id_to_token(t) for t in expected]
        assert starts is not None and starts.tolist() == [not t.startswith("##") for t in tokens]


def test_jieba_word_starts_follow_chinese_words(tokenizer: Tokenizer, tmp_path: Path) -> None:
    jieba = pytest.importorskip("jieba")
    path = tmp_path / "zh.txt"
    path.write_text("\n".join(dict.fromkeys(CHINESE)), encoding="utf-8")
    prepare(
        [str(path)], tokenizer, tmp_path / "zh", validation_fraction=0.0, word_segmentation="jieba", workers=1
    )
    dataset = TokenDataset(tmp_path / "zh")
    for i, text in enumerate(dict.fromkeys(CHINESE)):
        starts = dataset.word_starts(i)
        words = jieba.lcut(text)
        assert starts is not None and len(starts) == len(text)  # one token per CJK character
        assert starts.sum() == len(words)
        assert np.flatnonzero(starts).tolist() == np.cumsum([0] + [len(w) for w in words[:-1]]).tolist()


def test_split_is_deterministic_by_text(tokenizer: Tokenizer, tmp_path: Path) -> None:
    forward, backward = tmp_path / "f.txt", tmp_path / "b.txt"
    forward.write_text("\n".join(ENGLISH), encoding="utf-8")
    backward.write_text("\n".join(reversed(ENGLISH)), encoding="utf-8")
    picked = []
    for path in (forward, backward):
        prepare([str(path)], tokenizer, tmp_path / path.stem, validation_fraction=0.1, workers=1)
        validation = TokenDataset(tmp_path / path.stem, "validation")
        picked.append(sorted(validation.document(i).tolist() for i in range(len(validation))))
    assert picked[0] == picked[1] and 5 <= len(picked[0]) <= 40


def test_rerun_is_a_no_op_and_changes_rewrite(tokenizer: Tokenizer, corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    prepare([str(corpus)], tokenizer, out, workers=1)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = prepare([str(corpus)], tokenizer, out, workers=1)
    assert again["up_to_date"] is True
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps
    corpus.write_text(corpus.read_text(encoding="utf-8") + "one more line\n", encoding="utf-8")
    changed = prepare([str(corpus)], tokenizer, out, workers=1)
    assert changed["up_to_date"] is False and changed["num_documents"] == 201
    assert not list(out.glob(".*"))  # no staging leftovers


def test_token_dtype_by_vocabulary() -> None:
    assert token_dtype(65536) == "uint16" and token_dtype(65537) == "uint32"


# --------------------------------------------------------------------------- errors
def test_bad_input_names_file_and_line_or_is_skipped(tokenizer: Tokenizer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good line one\nbad \xff\xfe line\ngood line three\n")
    with pytest.raises(DataError, match=r"bad\.txt:2: not valid UTF-8"):
        prepare([str(bad)], tokenizer, tmp_path / "out", workers=1)
    assert not (tmp_path / "out" / "manifest.json").exists()
    report = prepare(
        [str(bad)], tokenizer, tmp_path / "out", workers=1, on_error="skip", validation_fraction=0
    )
    assert report["report"]["skipped_bad_records"] == 1 and report["num_documents"] == 2
    assert "bad.txt:2" in report["report"]["skipped_examples"][0]

    records = tmp_path / "r.jsonl"
    records.write_text('{"text": "fine"}\n{"body": "no text field"}\n{not json\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"r\.jsonl:2: no field 'text'"):
        prepare([str(records)], tokenizer, tmp_path / "out2", workers=1)
    skipped = prepare(
        [str(records)], tokenizer, tmp_path / "out2", workers=1, on_error="skip", validation_fraction=0
    )
    assert skipped["report"]["skipped_bad_records"] == 2

    table = tmp_path / "t.csv"
    table.write_text("id,body\n1,hello\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"t\.csv:1: no column 'text'"):
        prepare([str(table)], tokenizer, tmp_path / "out3", workers=1)


def test_empty_corpus_is_an_error(tokenizer: Tokenizer, tmp_path: Path) -> None:
    empty, blank = tmp_path / "empty.txt", tmp_path / "blank.txt"
    empty.write_text("", encoding="utf-8")
    blank.write_text("\n  \n\t\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty\.txt: no records"):
        prepare([str(empty)], tokenizer, tmp_path / "out", workers=1)
    with pytest.raises(DataError, match="empty corpus"):
        prepare([str(blank)], tokenizer, tmp_path / "out", workers=1)
    with pytest.raises(DataError, match="no such file"):
        prepare([str(tmp_path / "missing.txt")], tokenizer, tmp_path / "out", workers=1)
    assert not (tmp_path / "out").exists()  # a failed first run leaves no folder behind


def test_failure_mid_write_leaves_previous_data_intact(
    tokenizer: Tokenizer, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "data"
    prepare([str(corpus)], tokenizer, out, workers=1)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    import lmforge.data.pipeline as module

    calls = []
    real = module.tokenize_chunk

    def crash_on_second_chunk(*args: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # like Ctrl-C halfway through
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "_CHUNK_DOCUMENTS", 50)
    monkeypatch.setattr(module, "tokenize_chunk", crash_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        prepare([str(corpus)], tokenizer, out, workers=1, validation_fraction=0.5)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not list(out.glob(".*")) and TokenDataset(out).num_documents > 0


def test_truncated_token_file_is_refused(tokenizer: Tokenizer, corpus: Path, tmp_path: Path) -> None:
    prepare([str(corpus)], tokenizer, tmp_path, workers=1)
    tokens = tmp_path / "train.tokens.bin"
    tokens.write_bytes(tokens.read_bytes()[:-2])
    with pytest.raises(LmforgeError, match="incomplete"):
        TokenDataset(tmp_path)
    with pytest.raises(LmforgeError, match="no manifest"):
        TokenDataset(tmp_path / "nowhere")
    # The size check also makes a re-run repair the data instead of trusting the manifest.
    assert prepare([str(corpus)], tokenizer, tmp_path, workers=1)["up_to_date"] is False


def test_cli_prepare_end_to_end(tokenizer: Tokenizer, tmp_path: Path) -> None:
    tokenizer.save(tmp_path / "tok")
    data = tmp_path / "in.csv.gz"
    rows = "".join(f'{i},"{t}"\n' for i, t in enumerate(ENGLISH[:50]))
    # Line 1 is the header, lines 2-51 the rows, line 52 has a byte that is not UTF-8.
    data.write_bytes(gzip.compress(f"id,content\n{rows}".encode() + b"50,caf\xe9\n"))
    args = ["data", "prepare", "--input", str(data), "--text-column", "content"]
    args += ["--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "out")]
    args += ["--workers", "2", "--word-segmentation", "whitespace"]
    runner = CliRunner()
    failed = runner.invoke(app, args)
    assert failed.exit_code != 0 and "in.csv.gz:52" in str(failed.exception)
    result = runner.invoke(app, [*args, "--on-error", "skip"])
    assert result.exit_code == 0, result.output
    assert "1 bad records skipped" in result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["num_documents"] == 50 and manifest["splits"]["train"]["has_word_starts"]
    assert "up to date" in runner.invoke(app, [*args, "--on-error", "skip"]).output
