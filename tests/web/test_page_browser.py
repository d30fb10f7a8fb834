"""The status page in a real headless browser (Playwright driving Debian's chromium).

Set DOCUTRAY_WATCH_SCREENSHOT=1 to write docs/status-page.png (from
`test_the_page_shows_a_table_per_type_for_routing_pipelines`: a routing pipeline beside a plain
one) and docs/status-page-phone.png (from `test_the_page_shows_counts_plots_and_failures`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from docutray_watch.samples import make_pdf
from docutray_watch.testing import EmulatorFactory
from tests.web.conftest import CANARY_KEY, CHROMIUM_ARGS, TOKEN, processed_site, routed_site

DOCS = Path(__file__).resolve().parents[2] / "docs"
WAIT_MS = 30_000


@contextlib.asynccontextmanager
async def browser_page(
    chromium: str, *, width: int = 1280, height: int = 900
) -> AsyncIterator[Any]:
    """A page of a fresh headless chromium, recording console errors in `page.errors`."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = await browser.new_page(viewport={"width": width, "height": height})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.errors = errors
            yield page
        finally:
            await browser.close()


async def figure(page: Any, pipeline: str, name: str) -> str:
    text = await page.text_content(f'[data-pipeline="{pipeline}"] [data-figure="{name}"] b')
    return str(text)


async def wait_for_figure(page: Any, name: str, value: int) -> None:
    """Wait (polling the page's own refreshes) until a pipeline figure shows `value`."""
    await page.wait_for_function(
        "([name, value]) => { const b = document.querySelector("
        "`[data-pipeline=invoices] [data-figure=${name}] b`);"
        " return b && b.textContent === value; }",
        arg=[name, str(value)],
        timeout=WAIT_MS,
    )


async def test_the_page_shows_counts_plots_and_failures(
    tmp_path: Path, emulator_factory: EmulatorFactory, chromium: str
) -> None:
    """After `process` of a known set (3 good, 1 failed, 1 empty) and 2 more files taken by the
    daemon, the page loads with no console error, shows 5 done and 2 failed today, nothing
    waiting, draws non-empty plots, and shows each failure's reason with its sidecar."""
    async with processed_site(tmp_path, emulator_factory) as site:
        for name in ("d.pdf", "e.pdf"):  # taken by the daemon: the minute ring has them
            (site.inbox / name).write_bytes(make_pdf([name]))
        async with browser_page(chromium) as page:
            await page.goto(site.url + "/")
            await wait_for_figure(page, "done", 5)
            await page.wait_for_selector("#latency-plot circle", timeout=WAIT_MS)
            assert await figure(page, "invoices", "failed") == "2"
            assert await figure(page, "invoices", "waiting") == "0"
            assert await figure(page, "invoices", "in-flight") == "0"
            assert await figure(page, "invoices", "oldest") == "—"
            assert await page.get_attribute("#api-state", "data-state") == "ok"
            # The plots are drawn: bars of documents, a latency line, learned times.
            assert await page.locator("#throughput-plot rect.bar-done").count() >= 1
            assert await page.locator("#latency-plot path.line").count() == 1
            assert await page.locator("#learned-plot rect.bar-learned").count() >= 1
            reasons = await page.locator("#failures td.reason").all_text_contents()
            assert any("ERROR marker" in reason for reason in reasons), reasons
            assert any("empty" in reason for reason in reasons), reasons
            sinks = await page.locator("#sinks tbody td").all_text_contents()
            assert "ok" in sinks, sinks
            # The sidecar link opens the failure's .error.json, by document id.
            link = page.locator("#failures a", has_text="sidecar").first
            href = await link.get_attribute("href")
            assert href is not None
            assert href.startswith("/api/documents/")
            async with httpx.AsyncClient(base_url=site.url) as client:
                sidecar = (await client.get(href)).json()
            assert sidecar["reason"] in reasons
            assert page.errors == []
            await page.screenshot(path=str(tmp_path / "status-page.png"), full_page=True)
        async with browser_page(chromium, width=390, height=844) as phone:
            await phone.goto(site.url + "/")
            await wait_for_figure(phone, "done", 5)
            await phone.wait_for_selector("#latency-plot circle", timeout=WAIT_MS)
            # Readable on a phone: nothing wider than the screen but the tables' own scroll.
            width = await phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, width
            assert phone.errors == []
            if os.environ.get("DOCUTRAY_WATCH_SCREENSHOT") == "1":
                await phone.screenshot(path=str(DOCS / "status-page-phone.png"), full_page=True)


async def test_retry_from_the_page_needs_the_token(
    tmp_path: Path, emulator_factory: EmulatorFactory, chromium: str
) -> None:
    """Without a token the retry button is refused (403); with the token kept in
    sessionStorage it requeues the document, and the daemon runs it (done today goes up)."""
    async with processed_site(tmp_path, emulator_factory) as site:
        failed = tmp_path / "invoices" / "failed" / "empty.pdf"
        failed.write_bytes(make_pdf(["now it has content"]))  # the operator fixed the file
        async with browser_page(chromium) as page:
            await page.goto(site.url + "/")
            await wait_for_figure(page, "done", 3)
            row = page.locator("#failures tr", has_text="empty.pdf")
            await row.locator("button[data-retry]").click()
            await page.wait_for_selector("#action-result[data-status='403']", timeout=WAIT_MS)
            assert await figure(page, "invoices", "done") == "3"
            await page.fill("#token", TOKEN)
            await page.click("#token-form button[type=submit]")
            assert await page.evaluate("sessionStorage.getItem('docutray-watch-token')") == TOKEN
            html = await page.content()
            assert TOKEN not in html  # kept in sessionStorage, never in the page
            await row.locator("button[data-retry]").click()
            await page.wait_for_selector("#action-result[data-status='200']", timeout=WAIT_MS)
            await wait_for_figure(page, "done", 4)
            await wait_for_figure(page, "failed", 1)
            # The browser reports the refused request itself; the page raised nothing.
            assert page.errors == [
                "Failed to load resource: the server responded with a status of 403 (Forbidden)"
            ]


async def test_no_page_or_endpoint_reveals_the_key_the_token_or_a_signed_url(
    tmp_path: Path, emulator_factory: EmulatorFactory, chromium: str
) -> None:
    """With a canary API key, and a failure reason and sidecar that carry the key, the token and
    a presigned URL, neither the rendered page nor any endpoint's answer contains them."""
    signature = "X-Amz-Signature=c4n4ry5ignature"
    presigned = f"https://bucket.s3.amazonaws.com/a.pdf?X-Amz-Credential=AK%2F1&{signature}"
    async with processed_site(tmp_path, emulator_factory) as site:
        journal = site.daemon.engine.journal
        (failure,) = [
            d for d in await journal.documents_in("failed") if d.path.endswith("broken.pdf")
        ]
        leak = f"upload to {presigned} refused; key {CANARY_KEY}, token {TOKEN}"
        await journal.call(
            lambda: journal.journal.conn.execute(
                "UPDATE documents SET error = ? WHERE id = ?", (leak, failure.id)
            )
        )
        sidecar = Path(failure.archived_to or failure.path).with_name("broken.pdf.error.json")
        sidecar.write_text(f'{{"reason": "{leak}"}}', encoding="utf-8")
        bodies: list[str] = []
        async with httpx.AsyncClient(base_url=site.url) as client:
            for path in (
                "/",
                "/static/app.js",
                "/static/style.css",
                "/api/status?failures=500",
                "/api/live",
                f"/api/documents/{failure.id}/sidecar",
                "/api/documents/999999/sidecar",
            ):
                response = await client.get(path)
                bodies.append(f"{path} {response.status_code} {response.headers} {response.text}")
            refused = await client.post(
                f"/api/documents/{failure.id}/retry",
                headers={"Origin": site.url, "Authorization": "Bearer wrong"},
            )
            bodies.append(refused.text)
        assert "upload to https://bucket.s3.amazonaws.com/a.pdf?" in bodies[3]
        async with browser_page(chromium) as page:
            await page.goto(site.url + "/")
            await page.wait_for_selector("body[data-loaded=yes]", timeout=WAIT_MS)
            await page.wait_for_selector("#failures td.reason", timeout=WAIT_MS)
            bodies.append(await page.content())
        everything = "\n".join(bodies)
        for secret in (CANARY_KEY, TOKEN, signature, "X-Amz-Credential"):
            assert secret not in everything, secret


async def test_the_page_shows_a_table_per_type_for_routing_pipelines(
    tmp_path: Path, emulator_factory: EmulatorFactory, chromium: str
) -> None:
    """A pipeline with `identify` gets a table of documents per identified type and outcome
    (invoice: 1 success, 1 unrouted; receipt: 1 success; id_card: 1 unrouted); one without
    `identify` gets none; on a phone the page stays within the screen's width."""
    async with routed_site(tmp_path, emulator_factory) as site:
        for name in ("d.pdf", "e.pdf"):  # taken by the daemon: the plots have them
            (site.inbox / name).write_bytes(make_pdf([name]))
        async with browser_page(chromium) as page:
            await page.goto(site.url + "/")
            await page.wait_for_selector('[data-pipeline="mixed"] table.by-type', timeout=WAIT_MS)
            rows = {}
            for row in await page.locator('[data-pipeline="mixed"] table.by-type tbody tr').all():
                cells = await row.locator("td").all_text_contents()
                rows[cells[0]] = cells[1:]
            # success, duplicate, failed, rejected, unrouted, unfinished
            assert rows == {
                "id_card": ["0", "0", "0", "0", "1", "0"],
                "invoice": ["1", "0", "0", "0", "1", "0"],
                "receipt": ["1", "0", "0", "0", "0", "0"],
            }
            headers = await page.locator(
                '[data-pipeline="mixed"] table.by-type th'
            ).all_text_contents()
            assert headers == [
                "Type",
                "success",
                "duplicate",
                "failed",
                "rejected",
                "unrouted",
                "unfinished",
            ]
            assert await page.locator('[data-pipeline="invoices"] table.by-type').count() == 0
            await wait_for_figure(page, "done", 5)
            await page.wait_for_selector("#latency-plot circle", timeout=WAIT_MS)
            assert page.errors == []
            if os.environ.get("DOCUTRAY_WATCH_SCREENSHOT") == "1":
                await page.screenshot(path=str(DOCS / "status-page.png"), full_page=True)
        async with browser_page(chromium, width=390, height=844) as phone:
            await phone.goto(site.url + "/")
            await phone.wait_for_selector('[data-pipeline="mixed"] table.by-type', timeout=WAIT_MS)
            # On a phone the table scrolls inside its box: the page is no wider than the screen.
            width = await phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, width
            assert phone.errors == []
