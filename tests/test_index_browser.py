"""results/index.html in a real headless Chromium: loads with no console error, every image loads, and the claims
verdict is on the first screen. Slow; skipped with the reason when the system has no Chromium (scripts/test.sh
installs Debian's ``chromium`` when it runs as root)."""

from __future__ import annotations

import shutil

import pytest

from browser import Chromium, find_chromium
from test_analysis import TRAIN_T, make_results

import analysis
from saccader import catalog

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(find_chromium() is None,
                                 reason="no chromium on PATH (Debian: apt-get install chromium; scripts/test.sh "
                                        "installs it when run as root)")]


def test_index_page_in_headless_chromium(tmp_path):
    res = make_results(tmp_path / "results")
    for name in catalog.TARGETS:
        if name not in ("fig4", "fig_supp1", "table_supp1"):  # the hand-made results hold no examples / params
            analysis.run(name, res, res, train_glimpses=TRAIN_T)
    with Chromium(1280, 800) as browser:
        page = browser.load(res / "index.html")
        assert page["errors"] == []
        assert page["images"] >= 5 and page["broken"] == []
        top, bottom, text = page["verdict"]
        assert 0 <= top and bottom <= page["height"], "the claims verdict is not on the first screen"
        assert "9 claims on this run: 9 holds" in text
        # the check can fail: a missing figure is a broken image and a console error
        (res / "figures" / "fig3.png").unlink()
        page = browser.load(res / "index.html")
    assert any(src.endswith("fig3.png") for src in page["broken"]) and page["errors"]

