"""The quick config on the real embedded models, once: controls and calibration end to end, the analysis/
scripts through the public API, `query --universal`, and the pair browser clicked through in headless Chromium."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from saematch.cli import main

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("quick") / "run"
    assert main(["run", str(ROOT / "configs" / "quick.yaml"), "--set", f"run_dir={run}"]) == 0
    return run


def test_calibrated_readouts_have_floors_and_ceiling(quick_run):
    r = pd.read_parquet(quick_run / "calibration" / "readouts.parquet")
    assert {"matched-corr", "mknn", "cka-linear", "svcca", "rsa", "svcca-subspace"} <= set(r.readout)
    mc = r[r.readout == "matched-corr"]
    assert mc["floor_random"].notna().all() and mc["floor_token"].notna().all() and mc["ceiling"].notna().all()
    assert set(mc["floor_kind"]) <= {"random_a", "random_b", "embed_a", "embed_b"}
    assert (mc["ci_method"].isin(["bca", "percentile"])).all() and (mc["n_docs"] >= 10).all()
    assert r[r.readout == "mknn"]["ceiling"].isna().all()
    pairs = pd.read_parquet(next((quick_run / "pairs").glob("*/pairs.parquet")))
    assert pairs["heldout"].all() and (pairs["corr_train"].mean() > pairs["correlation"].mean())  # selection inflates


def test_analysis_scripts_run_on_the_quick_run(quick_run, tmp_path):
    for script in ("heatmaps", "best_layers", "corr_histograms", "semantic_table", "ci_width"):
        r = subprocess.run([sys.executable, str(ROOT / "analysis" / f"{script}.py"), str(quick_run), str(tmp_path)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "best_layers.png").stat().st_size > 0 and (tmp_path / "semantic_table.md").is_file()
    widths = pd.read_csv(tmp_path / "ci_width.csv")
    assert len(widths) == 9 and (widths["width_ratio"] > 0).all()
    assert len(list(tmp_path.glob("heatmap_calibrated_*.png"))) == 6


def test_query_universal(quick_run, capsys):
    assert main(["query", str(quick_run), "--universal", "--limit", "3", "--json"]) == 0
    import json

    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["universal"] for r in rows)  # the quick run has universal pairs, and only those are listed


def test_browser_on_the_quick_run_in_headless_chromium(quick_run):
    pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
    from saematch.report.serve import find_chromium, headless_chromium

    if not all(find_chromium()):
        pytest.skip("no local Chromium/chromedriver (Debian: apt-get install chromium chromium-driver)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    page = quick_run / "report" / "browser.html"
    drv = headless_chromium()
    try:
        wait = WebDriverWait(drv, 30)
        drv.get(page.as_uri())
        cells = wait.until(EC.presence_of_all_elements_located((By.CSS_SELECTOR, "td.cell[data-lp]")))
        cells[0].click()
        wait.until(lambda x: x.find_element(By.TAG_NAME, "body").get_attribute("data-view") == "lp")
        rows = wait.until(EC.presence_of_all_elements_located((By.CSS_SELECTOR, "tr.pair-row td.ctx")))
        rows[0].click()
        sides = wait.until(EC.presence_of_all_elements_located((By.CSS_SELECTOR, "#pair-view .side")))
        assert len(sides) == 2
        for el in sides:  # both features' contexts, each with its unit highlighted
            ctxs = el.find_elements(By.CSS_SELECTOR, "li.ctx")
            assert ctxs and all(len(c.find_elements(By.TAG_NAME, "mark")) == 1 for c in ctxs)
        assert "held-out corr" in drv.find_element(By.ID, "pair-view").text
    finally:
        drv.quit()
