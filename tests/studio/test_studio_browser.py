"""The studio page in a real headless browser (the system's Chromium, driven by Playwright) over tiny-model runs.

It opens the page, finds the runs list, checks that each curve's points are metrics.jsonl's rows, that the compare
view draws one line per run, that a chat reply streams in (the reply `tunesmith chat` gives) and that a bad recipe
gets the CLI's message; screenshots go to $TUNESMITH_SCREENSHOTS (else the test's tmp folder).
Skipped, with the reason printed, where Playwright or Chromium is not installed (`apt-get install chromium`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("playwright", reason="Playwright is not installed (pip install playwright)")
from test_studio_api import shared_runs  # noqa: E402  (tests/studio is on sys.path: rootdir-relative imports, as tests/train's recorders)

CHROMIUM = [os.environ.get("TUNESMITH_CHROMIUM", ""), "/usr/bin/chromium", "/usr/bin/chromium-browser", shutil.which("chromium") or ""]


def chromium() -> str | None:
    return next((path for path in CHROMIUM if path and os.path.isfile(path) and os.access(path, os.X_OK)), None)


@pytest.fixture(scope="module")
def browser_path():
    path = chromium()
    if path is None:
        reason = "no Chromium at /usr/bin/chromium (install the Debian package: apt-get install chromium; or set TUNESMITH_CHROMIUM)"
        print(f"\nskipped: {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def studio(browser_path, tmp_path_factory, tiny_model_dir, one_thread, serve_in_thread):
    from tunesmith.studio import create_studio_app

    folder = shared_runs(tmp_path_factory, tiny_model_dir)
    with serve_in_thread(create_studio_app(folder, host="127.0.0.1")) as port:
        yield f"http://127.0.0.1:{port}", folder


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("TUNESMITH_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def points(page, selector: str) -> list[list[float]]:
    return page.eval_on_selector_all(selector, "els => els.map(e => [Number(e.dataset.step), Number(e.dataset.value)])")


def curve(folder: Path, run: str, key: str) -> list[list[float]]:
    rows = [json.loads(line) for line in (folder / run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [[r["step"], r[key]] for r in rows if key in r and not r.get("final")]


def test_the_page_shows_runs_curves_compare_and_chat(studio, browser_path, shots, tiny_model_dir):
    from playwright.sync_api import sync_playwright

    from tunesmith.infer.chat import ChatSession
    from tunesmith.infer.sampling import SamplingParams
    from tunesmith.models import load_pretrained

    url, folder = studio
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, headless=True, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{url}/studio")

            # the runs list, newest first, with each one's status
            page.wait_for_selector('#runs-table tbody tr[data-id="sft-lora"]')
            ids = page.eval_on_selector_all("#runs-table tbody tr", "rows => rows.map(r => r.dataset.id)")
            assert ids[:2] == ["sft-full", "sft-lora"] and set(ids) == {"sft-lora", "sft-full", "cut-resumable", "cut-failed", "pipeline-x/stage-a"}
            assert page.get_attribute('#runs-table tr[data-id="cut-resumable"]', "data-status") == "resumable"
            page.screenshot(path=str(shots / "studio-runs.png"), full_page=True)

            # one run: every curve's points are metrics.jsonl's rows
            page.click('#runs-table tr[data-id="sft-lora"] td.name')
            page.wait_for_selector('#charts svg[data-key="loss"] circle.point')
            for key in ("loss", "eval_loss", "learning_rate", "grad_norm"):
                assert points(page, f'#charts svg[data-key="{key}"] circle.point') == curve(folder, "sft-lora", key), key
            assert page.text_content("#recipe") == (folder / "sft-lora" / "recipe.yaml").read_text()
            assert page.text_content("#answers tbody td") == "hello"
            assert page.locator("#diagnostics tbody tr").count() == len(json.loads((folder / "sft-lora" / "diagnostics.json").read_text())["diagnostics"])

            # chat: the reply streams in, and it is the reply `tunesmith chat` gives
            page.fill("#temperature", "1")
            page.fill("#top-k", "50")
            page.fill("#top-p", "0.9")
            page.fill("#max-tokens", "6")
            page.fill("#seed", "7")
            page.fill("#chat-input", "hello")
            page.click("#chat-send")
            page.wait_for_selector("#chat-log .msg.assistant.done", timeout=30_000)
            reply = page.text_content("#chat-log .msg.assistant .text")
            loaded = load_pretrained(str(folder / "sft-lora"), precision="auto")
            assert reply and reply == ChatSession(loaded.model, loaded.tokenizer, SamplingParams(temperature=1.0, top_k=50, top_p=0.9), 6, None, seed=7).reply(
                "hello"
            )
            assert "error" not in (page.get_attribute("#chat-log .msg.assistant", "class") or "")

            # the inspector's table for a prompt (the settings above), and the plan of the run's recipe
            page.fill("#inspect-prompt", "hello")
            page.click("#inspect-send")
            page.wait_for_selector("#inspect-table tbody tr", timeout=30_000)
            from tunesmith.infer.inspect import walk

            expected = walk(loaded.model, loaded.tokenizer, "hello", SamplingParams(temperature=1.0, top_k=50, top_p=0.9), steps=1, rows=10, chat=True, seed=0)[
                0
            ]
            shown_ids = page.eval_on_selector_all("#inspect-table tbody tr", "rows => rows.map(r => Number(r.dataset.tokenId))")
            assert shown_ids == [t["token_id"] for t in expected["tokens"]]
            page.wait_for_function("document.querySelector('#plan').textContent.includes('total_steps: ')", timeout=30_000)
            page.screenshot(path=str(shots / "studio-run.png"), full_page=True)

            # compare: tick two runs, one chart with a line per run, their metrics side by side
            page.click('nav a[data-view="runs"]')
            page.check('#runs-table input.pick[data-id="sft-lora"]')
            page.check('#runs-table input.pick[data-id="sft-full"]')
            page.click("#compare-btn")
            page.wait_for_selector("#compare-chart svg g.series")
            assert page.locator("#compare-chart svg g.series").count() == 2
            for run in ("sft-lora", "sft-full"):
                assert points(page, f'#compare-chart g.series[data-series="{run}"] circle.point') == curve(folder, run, "loss")
            heads = page.eval_on_selector_all("#compare-table thead th", "ths => ths.map(t => t.textContent)")
            assert heads == ["metric", "sft-lora", "sft-full"]
            assert page.locator('#compare-table tr[data-metric="train_loss"] td').count() == 3
            page.screenshot(path=str(shots / "studio-compare.png"), full_page=True)

            # a run in progress: rows appended to metrics.jsonl become points within a poll or two
            metrics = folder / "cut-failed" / "metrics.jsonl"
            kept = metrics.read_text()
            try:
                page.click('nav a[data-view="runs"]')
                page.click('#runs-table tr[data-id="cut-failed"] td.name')
                page.wait_for_selector('#charts svg[data-key="loss"] circle.point')
                with open(metrics, "a") as fh:
                    fh.write(json.dumps({"step": 2, "loss": 9.5, "learning_rate": 1e-3}) + "\n")
                page.wait_for_function("document.querySelectorAll('#charts svg[data-key=\"loss\"] circle.point').length === 2", timeout=10_000)
                assert points(page, '#charts svg[data-key="loss"] circle.point') == curve(folder, "cut-failed", "loss")
                page.wait_for_selector("#run-status.running")  # fresh metrics, no summary: running
            finally:
                metrics.write_text(kept)
                os.utime(metrics, (time.time() - 3600, time.time() - 3600))

            # launch: validate shows the CLI's message
            page.click('nav a[data-view="launch"]')
            page.fill("#recipe-text", "stage: sft\ntraining:\n  learning_rate: fast\n")
            page.click("#validate-btn")
            page.wait_for_selector("#launch-message.error")
            assert "recipe.yaml:3" in page.text_content("#launch-message") and "learning_rate" in page.text_content("#launch-message")
            page.screenshot(path=str(shots / "studio-launch.png"), full_page=True)
            assert not errors, errors
        finally:
            browser.close()
    print(f"\nscreenshots: {shots}")
