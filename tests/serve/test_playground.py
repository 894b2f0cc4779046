"""The web playground (``GET /``): its files and headers over HTTP, then the page driven end to end in
headless Debian Chromium through selenium (chat streamed and multi-turn against the server's own
non-streamed greedy answers, errors shown as the server words them, calibrated vs raw bars equal to
/v1/classify's JSON), with a screenshot of each tab saved as a test artifact.

Chromium comes from Debian (``make chromium``: apt-get install chromium chromium-driver); without
it the browser tests skip with that reason. Selenium is pointed at /usr/bin/chromedriver and kept
offline, so it never downloads a driver or a browser.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import numpy as np
import pytest
import torch
from serving import LiveServer, chat_tokenizer, serving

import lmforge
from lmforge.calibrate.io import save_calibrator
from lmforge.calibrate.scaling import TemperatureScaling
from lmforge.models import TransformerModel, preset_config
from lmforge.serve.config import ServeConfig
from lmforge.tokenizers.train import TokenizerTrainConfig, train_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# ../shared/ASSETS.md: without the networking flags Chromium floods the closed network with requests.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1100,1000",
)
KEY = "pg-secret"
LABELS = ["pos", "neg", "neutral"]
STATIC = Path(__file__).parents[2] / "src" / "lmforge" / "serve" / "static"


# ------------------------------------------------------------------------- the page over HTTP


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A random tiny Llama behind an API key. Its embeddings are untied: a tied one only repeats
    the prompt's last token, and the chat test needs replies that differ with the history."""
    tokenizer = chat_tokenizer()
    torch.manual_seed(0)
    config = preset_config(
        "llama-tiny",
        head="causal_lm",
        vocab_size=tokenizer.vocab_size,
        max_positions=512,
        tie_embeddings=False,
    )
    path = lmforge.save(
        TransformerModel(config).eval(), tmp_path_factory.mktemp("pg") / "tiny-chat", tokenizer
    )
    with serving(path, config=ServeConfig(api_key=KEY)) as server:
        yield server


def test_page_and_files_need_no_key_and_stay_on_this_origin(keyed_server: LiveServer) -> None:
    page = httpx2.get(f"{keyed_server.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'data-auth="true"' in page.text  # the key field is shown
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "http" not in page.text.replace(keyed_server.url, "")  # no CDN, no external link
    for name, media in (("app.js", "text/javascript"), ("style.css", "text/css")):
        response = httpx2.get(f"{keyed_server.url}/static/{name}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(media)
        assert response.content == (STATIC / name).read_bytes()
    missing = httpx2.get(f"{keyed_server.url}/static/../app.py")
    assert missing.status_code == 404 and "error" in missing.json()
    # the API itself still needs the key, and the page is not part of the OpenAPI schema
    assert httpx2.get(f"{keyed_server.url}/v1/models").status_code == 401
    paths = httpx2.get(f"{keyed_server.url}/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith("/static") for p in paths)


def test_no_key_field_without_a_key(scripted_server: LiveServer) -> None:
    assert 'data-auth="false"' in httpx2.get(f"{scripted_server.url}/").text


def test_static_files_are_package_data() -> None:
    """A non-editable install ships what pyproject's package-data names: every file of static/."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["lmforge"]
    files = [p.relative_to(STATIC.parents[1]).as_posix() for p in STATIC.iterdir()]
    assert sorted(files) == ["serve/static/app.js", "serve/static/index.html", "serve/static/style.css"]
    assert all(any(fnmatch.fnmatch(f, pattern) for pattern in patterns) for f in files)


# ------------------------------------------------------------------------------ in a browser


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra)")
    from selenium.webdriver.chrome.service import Service

    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip(
            f"Debian chromium + chromium-driver missing ({CHROMIUM}, {CHROMEDRIVER}): run `make chromium`"
        )
    os.environ["SE_OFFLINE"] = "true"  # selenium-manager, were it ever reached, must not download
    os.environ["SE_AVOID_STATS"] = "true"
    directory = tmp_path_factory.mktemp("chromium")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={directory / 'profile'}"):
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(directory / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: $LMFORGE_TEST_ARTIFACTS (CI keeps it), else a pytest temporary folder."""
    given = os.environ.get("LMFORGE_TEST_ARTIFACTS")
    directory = Path(given) if given else tmp_path_factory.mktemp("artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _screenshot(driver: Any, artifacts: Path, name: str) -> None:
    path = artifacts / f"playground-{name}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 1000
    print(f"screenshot: {path}")


def _wait(driver: Any, condition: Any, timeout: float = 60) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def _by_id(driver: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def _set(driver: Any, element_id: str, value: str) -> None:
    from selenium.webdriver.common.keys import Keys

    field = _by_id(driver, element_id)
    field.clear()
    field.send_keys(value, Keys.TAB)  # TAB: leave the field, so its change event fires


def _error(driver: Any) -> str:
    return driver.execute_script(
        "const e = document.getElementById('error'); return e.hidden ? '' : e.textContent"
    )


# Records every text an assistant reply shows (a streamed reply is rendered chunk by chunk), and
# the body of every request the page sends.
RECORD = """
window.__texts = [];
if (window.__bodies) return;
window.__bodies = [];
const fetch = window.fetch;
window.fetch = (url, init) => {
  if (init && init.body) window.__bodies.push(JSON.parse(init.body));
  return fetch(url, init);
};
new MutationObserver((records) => {
  for (const record of records) {
    const content = record.target.closest && record.target.closest('.message.assistant .content');
    if (!content) continue;
    for (const node of record.addedNodes) if (node.nodeType === Node.TEXT_NODE) window.__texts.push(node.data);
  }
}).observe(document.getElementById('messages'), {childList: true, subtree: true});
"""


def _chat(driver: Any, text: str) -> tuple[str, list[str], dict[str, str]]:
    """Send ``text``; the reply's final text, every text it showed while streaming, and its data-*."""
    driver.execute_script(RECORD)
    count = len(driver.find_elements("css selector", ".message.assistant"))
    _by_id(driver, "prompt").send_keys(text)
    _by_id(driver, "send").click()
    last = ".message.assistant:last-of-type"
    _wait(driver, lambda d: len(d.find_elements("css selector", ".message.assistant")) > count)
    _wait(
        driver,
        lambda d: d.execute_script(f"return document.querySelector('{last}').dataset.state") != "streaming",
    )
    data = driver.execute_script(f"return Object.assign({{}}, document.querySelector('{last}').dataset)")
    final = driver.execute_script(f"return document.querySelector('{last} .content').textContent")
    return final, driver.execute_script("return window.__texts"), data


@pytest.mark.slow
def test_chat_streams_multi_turn_with_a_key(browser: Any, keyed_server: LiveServer, artifacts: Path) -> None:
    driver, server = browser, keyed_server
    driver.get(f"{server.url}/")
    assert _by_id(driver, "api-key").is_displayed()
    assert "needs an API key" in _error(driver)
    _set(driver, "api-key", "wrong")  # the server's own 401 message, shown
    _wait(driver, lambda d: "401: missing or incorrect API key" in _error(d))
    _set(driver, "api-key", KEY)
    _wait(driver, lambda d: _by_id(d, "model").text == "tiny-chat" and not _error(d))
    _set(driver, "temperature", "0")
    _set(driver, "max_tokens", "24")

    client = server.client(api_key=KEY)

    def greedy(messages: list[dict[str, str]]) -> str:
        reply = client.chat.completions.create(
            model="tiny-chat",
            messages=messages,
            temperature=0,
            max_tokens=24,  # type: ignore[arg-type]
        )
        return reply.choices[0].message.content or ""

    history: list[dict[str, str]] = []
    for text in ("Hello there", "And once more?"):
        history.append({"role": "user", "content": text})
        final, shown, data = _chat(driver, text)
        assert data["state"] == "done", _error(driver)
        sent = driver.execute_script("return window.__bodies.at(-1)")
        assert sent["messages"] == history and sent["stream"] is True  # the page keeps the history
        assert (sent["temperature"], sent["max_tokens"], sent["top_p"]) == (0, 24, 1)
        expected = greedy(history)
        assert final == expected and expected
        assert len(shown) == int(data["chunks"]) > 1  # one render per streamed chunk
        assert (
            all(b.startswith(a) and len(b) > len(a) for a, b in zip(shown, shown[1:])) and shown[-1] == final
        )
        history.append({"role": "assistant", "content": final})
    assert len(driver.find_elements("css selector", ".message")) == 4
    _screenshot(driver, artifacts, "chat")

    # Stop: the reply so far stays, the server frees the request (its client went away).
    _by_id(driver, "clear").click()
    _set(driver, "max_tokens", "400")
    _by_id(driver, "prompt").send_keys("Tell me everything")
    _by_id(driver, "send").click()
    last = ".message.assistant:last-of-type"
    _wait(
        driver,
        lambda d: int(d.execute_script(f"return document.querySelector('{last}').dataset.chunks")) >= 3,
    )
    _by_id(driver, "stop").click()
    _wait(
        driver,
        lambda d: d.execute_script(f"return document.querySelector('{last}').dataset.state") == "stopped",
    )
    chunks = int(driver.execute_script(f"return document.querySelector('{last}').dataset.chunks"))
    assert 3 <= chunks < 400 and _by_id(driver, "send").is_enabled() and not _error(driver)
    assert driver.execute_script(f"return document.querySelector('{last} .content').textContent")
    metrics = {"Authorization": f"Bearer {KEY}"}
    _wait(
        driver,
        lambda d: (
            "lmforge_requests_in_flight 0.0" in httpx2.get(f"{server.url}/metrics", headers=metrics).text
        ),
    )

    # An error is the server's OpenAI-style message, and the failed turn stays out of the history.
    _by_id(driver, "clear").click()
    assert not driver.find_elements("css selector", ".message")
    _set(driver, "max_tokens", "5000")
    _, _, data = _chat(driver, "too long")
    body = {"model": "tiny-chat", "messages": [{"role": "user", "content": "too long"}], "max_tokens": 5000}
    refused = httpx2.post(
        f"{server.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert data["state"] == "error" and _error(driver) == f"400: {refused.json()['error']['message']}"
    assert _by_id(driver, "prompt").get_attribute("value") == "too long"  # given back for a retry
    _by_id(driver, "tab-classify").click()
    _set(driver, "classify-input", "not a classifier")
    _by_id(driver, "classify-send").click()
    _wait(driver, lambda d: "is not a sequence classifier" in _error(d))
    resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(name.startswith(server.url) for name in resources)  # nothing from elsewhere


def _classifier(directory: Path) -> Path:
    """A tiny BERT classifier with a temperature-scaling calibrator and an MC-dropout predictive."""
    texts = ["a great movie, really fine", "dull plot and awful story", "the movie was a movie"]
    tokenizer = train_tokenizer(
        [*texts, "good bad fine great awful dull the a was"] * 5,
        TokenizerTrainConfig(kind="wordpiece", family="bert", vocab_size=80),
    )
    torch.manual_seed(0)
    config = preset_config(
        "bert-tiny",
        head="sequence_classification",
        num_labels=3,
        vocab_size=tokenizer.vocab_size,
        dropout=0.1,
    )
    path = lmforge.save(TransformerModel(config).eval(), directory, tokenizer)
    rng = np.random.default_rng(0)
    calibrator = TemperatureScaling().fit(rng.normal(size=(64, 3)) * 4, rng.integers(0, 3, 64))
    save_calibrator(calibrator, path, predictive={"method": "mc_dropout", "mc_passes": 4, "seed": 0})
    return path


@pytest.mark.slow
def test_classify_bars_equal_the_json(browser: Any, artifacts: Path, tmp_path: Path) -> None:
    driver, text = browser, "a great movie with a dull plot"
    with serving(_classifier(tmp_path / "clf"), config=ServeConfig(labels=LABELS)) as server:
        driver.get(f"{server.url}/")
        assert not _by_id(driver, "api-key").is_displayed()
        _wait(driver, lambda d: _by_id(d, "model").text == "clf")
        _by_id(driver, "tab-classify").click()
        assert not _by_id(driver, "chat").is_displayed()
        _set(driver, "classify-input", text)
        _by_id(driver, "classify-send").click()
        _wait(driver, lambda d: _by_id(d, "classify-result").is_displayed())
        body = httpx2.post(f"{server.url}/v1/classify", json={"model": "clf", "input": text}).json()
        shown = driver.execute_script(
            """return [...document.querySelectorAll('.bar-pair')].map(p => ({
                 label: p.dataset.label,
                 bars: [...p.querySelectorAll('.bar')].map(b => ({
                   kind: b.classList[1], prob: b.dataset.prob, text: b.querySelector('.value').textContent,
                   width: b.querySelector('.fill').getBoundingClientRect().width / b.getBoundingClientRect().width}))
               }))"""
        )
        method = _by_id(driver, "method").text
        _screenshot(driver, artifacts, "classify")
    result = body["data"][0]
    assert body["calibration"] == "temperature" and body["predictive"]["method"] == "mc_dropout"
    assert method == "calibration: temperature · predictive: mc_dropout, 4 passes"
    assert [row["label"] for row in shown] == LABELS
    assert not np.allclose(list(result["probs"].values()), list(result["raw_probs"].values()), atol=1e-3)
    for row in shown:
        calibrated, raw = row["bars"]
        assert calibrated["kind"] == "calibrated" and raw["kind"] == "raw"
        for bar, expected in (
            (calibrated, result["probs"][row["label"]]),
            (raw, result["raw_probs"][row["label"]]),
        ):
            assert float(bar["prob"]) == expected  # the number itself, not a re-rounded copy
            assert abs(float(bar["text"]) - expected) <= 5e-5 and len(bar["text"]) == 6
            assert bar["width"] == pytest.approx(expected, abs=0.01)  # the bar's length is the probability
    top = driver.find_elements("css selector", ".bar-label.top")
    assert [e.text for e in top] == [result["label"]]
