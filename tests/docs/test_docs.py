"""The pages under docs/ run as written.

Every ```python block of a page runs, in page order, in one namespace in a fresh interpreter (cwd a
temporary directory, HF_HUB_OFFLINE=1, one torch thread); a ```bash test block (only `lmforge ...`
lines) runs in the same directory at its place in the page. A failure names the page, the block
and the line of the page. Pages holding ``<!-- slow -->`` are marked slow (they still run in CI).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
TIMEOUT_S = 300

# Runs in the child: blocks arrive as JSON on stdin. Python blocks are compiled under the page's
# name with their page line numbers, so a traceback points into the page.
RUNNER = r"""
import json, subprocess, sys, time, traceback
started = time.perf_counter()
import torch
torch.set_num_threads(1)
page, blocks = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
for number, block in enumerate(blocks, 1):
    where = f"{page}, block {number} ({block['lang']}, line {block['line']})"
    print(f"[{time.perf_counter() - started:.1f}s] {where}", flush=True)
    if block["lang"] == "python":
        try:
            exec(compile("\n" * (block["line"] - 1) + block["code"], page, "exec"), namespace)
        except BaseException:
            sys.exit(f"FAILED {where}:\n{traceback.format_exc()}")
    else:
        sys.stdout.flush()
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block["code"]], capture_output=True, text=True)
        sys.stdout.write(done.stdout)
        if done.returncode:
            sys.exit(f"FAILED {where}: exit code {done.returncode}\n{done.stdout[-2000:]}{done.stderr[-4000:]}")
"""


@dataclass(frozen=True)
class Block:
    lang: str  # "python" or "bash"
    code: str
    line: int  # 1-based line of the page where the code starts


def blocks(text: str) -> list[Block]:
    """The runnable blocks of a page: every ```python block and every ```bash test block."""
    found = []
    for match in FENCE.finditer(text):
        info = match.group(1).split()
        line = text.count("\n", 0, match.start(2)) + 1
        if info[:1] == ["python"]:
            found.append(Block("python", match.group(2), line))
        elif info == ["bash", "test"]:
            found.append(Block("bash", match.group(2), line))
    return found


def run_page(page: Path, workdir: Path) -> subprocess.CompletedProcess[str]:
    """Run the page's blocks in a fresh interpreter with cwd ``workdir``."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    payload = [page.name, [b.__dict__ for b in blocks(page.read_text(encoding="utf-8"))]]
    return subprocess.run(
        [sys.executable, "-c", RUNNER], input=json.dumps(payload), cwd=workdir, env=env,
        capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip


def _page_param(page: Path) -> object:
    slow = "<!-- slow -->" in page.read_text(encoding="utf-8")
    return pytest.param(page, id=page.stem, marks=[pytest.mark.slow] if slow else [])


def test_there_are_pages() -> None:
    names = {p.stem for p in PAGES}
    assert {"index", "data", "tokenizers", "models", "generate", "serve"} <= names, names


@pytest.mark.parametrize("page", [_page_param(p) for p in PAGES])
def test_page_examples_run(page: Path, tmp_path: Path) -> None:
    found = blocks(page.read_text(encoding="utf-8"))
    if page.stem != "index":
        assert any(b.lang == "python" for b in found), f"{page.name}: no ```python example"
    for block in found:
        if block.lang == "bash":
            commands = [
                ln for ln in block.code.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
            ]
            bad = [ln for ln in commands if not ln.startswith("lmforge ") and not ln.startswith("  ")]
            assert not bad, f"{page.name} line {block.line}: a ```bash test block runs lmforge only: {bad}"
    if not found:
        return
    done = run_page(page, tmp_path)
    if done.returncode:
        pytest.fail(done.stderr[-6000:], pytrace=False)


def test_a_failing_block_fails_the_page(tmp_path: Path) -> None:
    page = tmp_path / "broken.md"
    page.write_text("# x\n\n```python\nvalue = 1\n```\n\ntext\n\n```python\nassert value == 2, 'nope'\n```\n")
    done = run_page(page, tmp_path)
    assert done.returncode != 0
    assert "FAILED broken.md, block 2 (python, line 10)" in done.stderr
    assert 'File "broken.md", line 10' in done.stderr and "AssertionError: nope" in done.stderr

    page.write_text("```bash test\nlmforge no-such-verb\n```\n")
    done = run_page(page, tmp_path)
    assert done.returncode != 0 and "FAILED broken.md, block 1 (bash, line 2): exit code 2" in done.stderr


def test_relative_links_resolve() -> None:
    missing = []
    for page in PAGES:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                missing.append(f"{page.name}: {target}")
    assert not missing, missing


def test_index_links_every_page() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    linked = {t.split("#")[0] for t in LINK.findall(index)}
    assert {p.name for p in PAGES if p.stem != "index"} <= linked
