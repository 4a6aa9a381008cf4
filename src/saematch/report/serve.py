"""View the pair browser: serve ``RUN/report/`` over local HTTP, or drive it headless for screenshots.

``serve`` uses only Python's standard ``http.server``.  ``screenshot_views``
needs Selenium (a dev extra) and a local Chromium with its driver (Debian:
``apt-get install chromium chromium-driver``); nothing is ever downloaded.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import shutil
import webbrowser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional

from saematch.artifacts import RunLayout
from saematch.errors import SaematchError
from saematch.report.browser import BrowserConfig, build_browser, pair_files

log = logging.getLogger(__name__)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        log.debug("%s " + format, self.address_string(), *args)


def ensure_browser(run_dir: str | Path, cfg: BrowserConfig = BrowserConfig()) -> Path:
    """``RUN/report/browser.html``, rebuilt when missing or older than a pair table, card or score file."""
    root = Path(run_dir)
    inputs = pair_files(root)
    inputs += list(root.glob("features/*/*/cards.parquet")) + list(root.glob("similarity/scores.parquet"))
    path = RunLayout(root).report() / "browser.html"
    if not path.is_file() or path.stat().st_mtime < max(p.stat().st_mtime for p in inputs):
        path = build_browser(root, cfg)
    return path


def make_server(run_dir: str | Path, port: int = 8000, host: str = "127.0.0.1",
                cfg: BrowserConfig = BrowserConfig()) -> ThreadingHTTPServer:
    """An HTTP server for ``RUN/report/`` (browser built first); the caller runs ``serve_forever``."""
    page = ensure_browser(run_dir, cfg)
    handler = functools.partial(_QuietHandler, directory=str(page.parent))
    try:
        return ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            why = "already in use" if exc.errno == errno.EADDRINUSE else "not allowed for this user"
            raise SaematchError(f"port {port} on {host} is {why}; pick another with --port") from None
        raise SaematchError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None


def serve(run_dir: str | Path, port: int = 8000, open_browser: bool = False, host: str = "127.0.0.1",
          cfg: BrowserConfig = BrowserConfig()) -> None:
    """Serve the run's pair browser at ``http://host:port/browser.html`` until interrupted."""
    server = make_server(run_dir, port, host, cfg)
    url = f"http://{host}:{server.server_address[1]}/browser.html"
    log.info("serving %s at %s (Ctrl-C to stop)", RunLayout(Path(run_dir)).report(), url)
    if open_browser:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        server.server_close()


def find_chromium() -> tuple[Optional[str], Optional[str]]:
    """Paths of a local Chromium and its chromedriver (env SAEMATCH_CHROMIUM / SAEMATCH_CHROMEDRIVER first)."""
    browser = os.environ.get("SAEMATCH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("SAEMATCH_CHROMEDRIVER") or shutil.which("chromedriver")
    return browser, driver


def headless_chromium(width: int = 1280, height: int = 900) -> Any:
    """A Selenium WebDriver on the local headless Chromium; never downloads a browser or driver."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise SaematchError("screenshots need selenium: pip install selenium") from None
    browser, driver = find_chromium()
    if not browser or not driver:
        raise SaematchError("no local Chromium and chromedriver found; on Debian: apt-get install chromium chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-extensions", "--no-first-run", f"--window-size={width},{height}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console errors readable via get_log("browser")
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def screenshot_views(html: str | Path, out: str | Path, timeout: float = 20.0) -> list[Path]:
    """PNGs of the grid, the first layer pair and its best pair: ``out/browser_{grid,layer_pair,pair}.png``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    drv = headless_chromium()
    try:
        wait = WebDriverWait(drv, timeout)
        drv.get(Path(html).resolve().as_uri())
        cell = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "td.cell[data-lp]")))
        shots = [out / "browser_grid.png"]
        drv.save_screenshot(str(shots[-1]))
        cell.click()
        row = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "tr.pair-row")))
        shots.append(out / "browser_layer_pair.png")
        drv.save_screenshot(str(shots[-1]))
        row.click()
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#pair-view .side mark")))
        shots.append(out / "browser_pair.png")
        drv.save_screenshot(str(shots[-1]))
    finally:
        drv.quit()
    log.info("screenshots: %s", ", ".join(map(str, shots)))
    return shots
