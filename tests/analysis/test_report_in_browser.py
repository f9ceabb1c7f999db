"""The committed CPU-scale report's index.html, opened in a headless browser (Chromium):
every embedded figure decodes, the answer and the main figure are on the first screen, and
nothing overflows the page's width. Skipped where no Chromium is installed."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPORT = Path(__file__).resolve().parents[2] / "results" / "cpu_scale" / "report"
BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(b)), None)
VIEW = (1280, 900)

# appended to a copy of the page: measures what the browser laid out, into the DOM
PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const answer = [...document.querySelectorAll('p')].find(p => p.textContent.startsWith('Answer.'));
  const r = {n_img: imgs.length,
             decoded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
             first_img_top: imgs.length ? imgs[0].getBoundingClientRect().top : -1,
             first_img: imgs.length ? imgs[0].dataset.file : '',
             answer_top: answer ? answer.getBoundingClientRect().top : -1,
             overflow: document.documentElement.scrollWidth > window.innerWidth,
             h2: [...document.querySelectorAll('h2')].map(h => h.textContent)};
  document.body.setAttribute('data-probe', JSON.stringify(r));
});</script>"""


@pytest.mark.skipif(BROWSER is None, reason="no Chromium to render the page")
def test_committed_report_renders(tmp_path):
    page = (REPORT / "index.html").read_text()
    probe = tmp_path / "index.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    out = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
         f"--window-size={VIEW[0]},{VIEW[1]}", "--virtual-time-budget=5000", "--dump-dom",
         probe.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r"data-probe=\"([^\"]+)\"", out.stdout)
    assert m, out.stderr[-2000:]
    r = json.loads(m.group(1).replace("&quot;", '"'))
    assert r["n_img"] == len(list(REPORT.glob("*.png"))) and r["decoded"] == r["n_img"]
    assert 0 <= r["answer_top"] < r["first_img_top"] < VIEW[1] / 2  # the answer, then its figure
    assert r["first_img"] == "scaling_critic_flow_steps.png"
    assert not r["overflow"]
    assert r["h2"][0] == "Leaderboard per environment" and r["h2"][-1] == "Method and inputs"
