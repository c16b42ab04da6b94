"""Take the README's studio screenshots (docs/studio/{runs,run,compare}.png) of a folder of real runs.

    python tools/studio_screenshots.py --runs runs --run pirate-sft --compare pirate-sft,tiny

Starts `tunesmith studio` on a free port, opens it in headless Chromium (the system's, as the browser test does)
and saves the runs list, one run (curves, answers before/after, diagnostics, recipe) and two runs compared.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wait_for(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"the studio did not answer at {url} within {seconds:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs")
    parser.add_argument("--run", required=True, help="The run shown alone.")
    parser.add_argument("--compare", required=True, help="Two runs, comma-separated.")
    parser.add_argument("--out", default=str(ROOT / "docs" / "studio"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from tunesmith.bench.serve import free_port

    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser_path:
        raise SystemExit("no chromium on PATH: `make chromium` installs Debian's")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tunesmith", "studio", "--runs", args.runs, "--port", str(port)])
    try:
        url = f"http://127.0.0.1:{port}/studio"
        wait_for(url)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, headless=True, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_selector(f'#runs-table tbody tr[data-id="{args.run}"]')
            page.screenshot(path=str(out / "runs.png"), full_page=True)
            page.click(f'#runs-table tr[data-id="{args.run}"] td.name')
            page.wait_for_selector('#charts svg[data-key="loss"] circle.point')
            page.wait_for_timeout(1500)  # the plan and diagnostics panels fill in after the curves
            page.screenshot(path=str(out / "run.png"), full_page=True)
            page.click('nav a[data-view="runs"]')
            for run in args.compare.split(","):
                page.check(f'#runs-table input.pick[data-id="{run}"]')
            page.click("#compare-btn")
            page.wait_for_selector("#compare-chart svg g.series")
            page.screenshot(path=str(out / "compare.png"), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {out}/runs.png, run.png, compare.png")


if __name__ == "__main__":
    main()
