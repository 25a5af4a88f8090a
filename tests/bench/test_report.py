"""Reports: Markdown, a self-contained HTML page whose plots a real browser decodes, and merging results."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edgecnn.bench.report import merge_reports, to_markdown, write_reports
from edgecnn.bench.result import validate_result
from edgecnn.errors import DataError, InputPathError, OutputExistsError

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Appended to a copy of the page: once images have loaded, write each one's decoded size into the DOM.
PROBE = """<script>window.addEventListener('load', function () {
  var out = [];
  document.querySelectorAll('img.plot').forEach(function (img) {
    out.push(img.complete + ':' + img.naturalWidth + 'x' + img.naturalHeight);
  });
  var p = document.createElement('pre'); p.id = 'probe'; p.textContent = out.join(',');
  document.body.appendChild(p);
});</script>"""


def test_markdown_has_every_row_and_the_fp32_ratio(mnist_bench):
    text = to_markdown(mnist_bench.to_dict())
    table = [line for line in text.splitlines() if line.startswith("| mnist_cnn")]
    assert len(table) == len(mnist_bench.rows)
    int8 = next(r for r in mnist_bench.rows if r.format == "tflite-int8")
    assert f"mnist_cnn tflite-int8 @cpu x1: {int8.p50_vs_fp32:.2f}x" in text
    assert "Accuracy data: mnist:val" in text


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_html_report_plots_decode_in_headless_chromium(mnist_bench, tmp_path):
    paths = write_reports(mnist_bench.to_dict(), tmp_path / "out")
    page = paths["html"].read_text(encoding="utf-8")
    assert "src='http" not in page and 'src="http' not in page  # self-contained
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
                           probe_page.as_uri()], check=True, capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout)
    assert found, done.stdout[-500:]
    images = found.group(1).split(",")
    assert len(images) == 2  # latency distribution, accuracy vs latency
    for image in images:
        complete, size = image.split(":")
        width, height = (int(v) for v in size.split("x"))
        assert complete == "true" and width > 100 and height > 100


def test_outputs_are_kept_unless_forced(mnist_bench, tmp_path):
    raw = mnist_bench.to_dict()
    paths = write_reports(raw, tmp_path)
    before = paths["json"].read_bytes()
    with pytest.raises(OutputExistsError):
        write_reports(dict(raw, command="changed"), tmp_path)
    assert paths["json"].read_bytes() == before
    write_reports(dict(raw, command="changed"), tmp_path, force=True)
    assert json.loads(paths["json"].read_text())["command"] == "changed"


def test_merge_reports_from_two_devices(mnist_bench, tmp_path):
    raw = mnist_bench.to_dict()
    pi = dict(raw, environment=dict(raw["environment"], hostname="raspberrypi", cpu_model="Cortex-A72"))
    for name, content in (("ws", raw), ("pi", pi)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "bench.json").write_text(json.dumps(content))
    paths = merge_reports([tmp_path / "ws" / "bench.json", tmp_path / "pi" / "bench.json"], tmp_path / "merged")
    merged = json.loads(paths["json"].read_text())
    validate_result(merged)
    assert len(merged["rows"]) == 2 * len(raw["rows"])
    sources = {row["source"] for row in merged["rows"]}
    assert "raspberrypi" in sources and len(sources) == 2
    assert set(merged["environments"]) == sources
    md = paths["md"].read_text()
    assert "Cortex-A72" in md and "| raspberrypi | mnist_cnn |" in md


def test_report_refuses_foreign_files(tmp_path):
    with pytest.raises(InputPathError):
        merge_reports([tmp_path / "missing.json"], tmp_path / "o")
    not_json = tmp_path / "a.json"
    not_json.write_text("{nope")
    with pytest.raises(DataError, match="not valid JSON"):
        merge_reports([not_json], tmp_path / "o")
    foreign = tmp_path / "b.json"
    foreign.write_text(json.dumps({"hello": 1}))
    with pytest.raises(DataError, match="schema"):
        merge_reports([foreign], tmp_path / "o")
