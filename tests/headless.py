"""Run a static widget page's JavaScript, in node or in headless Chromium, for the widgets with a static view.

In Chromium the page is ``body`` plus a driver script that clicks and types, then writes what it saw as JSON into
``<pre id="driver-out">``; Chromium's ``--dump-dom`` returns the document after ``--virtual-time-budget``.
"""

import html
import json
import re
import shutil
import subprocess

import pytest


def drive_page(tmp_path, body: str, driver_js: str) -> list:
    """Open ``body`` with ``driver_js`` in headless Chromium and return the driver's JSON log (skip without one)."""
    chromium = next((p for p in (shutil.which("chromium"), shutil.which("google-chrome")) if p), None)
    if chromium is None:
        pytest.skip("Chromium is not installed: the page cannot be driven here (CI installs it)")
    page = tmp_path / "page.html"
    page.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{body}"
                    f"<script>{driver_js}</script></body></html>", encoding="utf-8")
    run = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}/p",
                          "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="driver-out">(.*?)</pre>', run.stdout, re.S)
    assert found, f"the driver wrote no log; Chromium said: {run.stderr[-500:]}"
    return json.loads(html.unescape(found.group(1)))


def run_node(tmp_path, page: str, driver_js: str, *, module: str = "page.js"):
    """Run the ``<script>`` of ``page`` as a node module (``require``d from ``driver_js`` as ``module``, a file
    in ``tmp_path``) and return what the driver printed as JSON (skip without node)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the page's JavaScript cannot be run here (CI runs it)")
    (tmp_path / module).write_text(re.search(r"<script>(.*)</script>", page, re.S).group(1))
    (tmp_path / "driver.js").write_text(driver_js)
    run = subprocess.run([node, str(tmp_path / "driver.js")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)
