"""X-Ray in a real browser (Debian's Chromium through Playwright) over real local Ray clusters.

Set DML_XRAY_SCREENSHOTS=docs to refresh the README's screenshots from these pages.
"""

from __future__ import annotations

import os
import shlex
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect, sync_playwright

from discord_ml.jobs.client import RayJobs
from discord_ml_tests.xray.conftest import XRayWorld

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("DML_CHROMIUM", "/usr/bin/chromium")
SHOTS = os.environ.get("DML_XRAY_SCREENSHOTS")
COLUMNS = ["name", "team", "owner", "purpose", "GPU", "workers", "status", "age", "cost", "links", ""]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (Debian's), or set DML_CHROMIUM")
    with sync_playwright() as playwright:
        flags = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]  # root in a container, no GPU
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=flags)
        yield launched
        launched.close()


def as_user(browser: Browser, base: str, user: str, groups: str = "") -> BrowserContext:
    """A browser session behind the auth proxy: every request carries the trusted identity headers."""
    headers = {"X-Forwarded-User": user, **({"X-Forwarded-Groups": groups} if groups else {})}
    context = browser.new_context(base_url=base, extra_http_headers=headers, viewport={"width": 1280, "height": 720})
    context.set_default_timeout(30_000)
    return context


def shot(page: Page, name: str) -> None:
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / f"xray-{name}.png"), full_page=True)


def row(page: Page, name: str) -> Locator:
    return page.locator(f'#clusters tbody tr[data-cluster="local/ml/{name}"]')


def test_clusters_table_refreshes_filters_and_guards_delete(browser: Browser, xray_server: str,
                                                            xray_world: XRayWorld) -> None:  # fmt: skip
    alice = as_user(browser, xray_server, "alice").new_page()
    alice.goto("/")
    headers = [h.strip() for h in alice.locator("#clusters thead th").all_inner_texts()]
    assert [h.lower() for h in headers] == [c.lower() for c in COLUMNS]
    bob_row = row(alice, "xr-bob")
    expect(bob_row.locator("td.owner")).to_have_text("bob")
    expect(bob_row.locator("td.team")).to_have_text("quests")
    expect(bob_row.locator("td.gpu")).to_have_text("cpu")
    expect(bob_row.locator("td.workers")).to_have_text("1/1")
    expect(bob_row.locator("td.status")).to_contain_text("ready")
    dashboard = bob_row.locator("td.links a", has_text="Ray dashboard").get_attribute("href") or ""
    assert dashboard.startswith("http://127.0.0.1:")
    expect(bob_row.locator("button", has_text="Delete")).to_have_count(0)  # not hers: no button
    alice.evaluate("window.__noReload = true")

    # a cluster created elsewhere appears without a reload
    xray_world.provider.create(xray_world.spec("xr-new", "alice", "ads"))
    expect(row(alice, "xr-new")).to_be_visible(timeout=30_000)
    expect(row(alice, "xr-new").locator("td.status")).to_contain_text("ready")
    shot(alice, "clusters")

    # filtering: by owner, then status, in place; the URL keeps the filters
    alice.fill("#filters input[name=owner]", "bob")
    alice.press("#filters input[name=owner]", "Enter")
    expect(row(alice, "xr-alice")).to_have_count(0)
    expect(row(alice, "xr-bob")).to_be_visible()
    assert "owner=bob" in alice.url
    alice.fill("#filters input[name=owner]", "")
    alice.select_option("#filters select[name=status]", "dead")
    expect(alice.locator("#clusters tbody tr.empty")).to_contain_text("No cluster matches these filters")
    alice.select_option("#filters select[name=status]", "")
    expect(row(alice, "xr-new")).to_be_visible()
    assert alice.evaluate("window.__noReload") is True  # still the same document

    # bob's delete of alice's cluster is refused by the server (his page offers no button; he forces it)
    bob = as_user(browser, xray_server, "bob").new_page()
    bob.goto("/")
    expect(row(bob, "xr-new").locator("button")).to_have_count(0)
    refused = bob.evaluate(
        """async () => { const r = await fetch('/api/clusters/local/ml/xr-new/delete', {method: 'POST',
             headers: {'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content}});
             return [r.status, (await r.json()).detail]; }"""
    )
    assert refused[0] == 403 and "bob may not delete cluster 'xr-new'" in refused[1]
    assert "xr-new" in [c.name for c in xray_world.provider.list()]

    # alice deletes her own: confirm, the row goes, the cluster is gone
    alice.on("dialog", lambda dialog: dialog.accept())
    row(alice, "xr-new").locator("button", has_text="Delete").click()
    expect(alice.locator("#flash")).to_contain_text("deleted local/ml/xr-new", timeout=60_000)
    expect(row(alice, "xr-new")).to_have_count(0)
    assert "xr-new" not in [c.name for c in xray_world.provider.list()]


def test_job_log_page_shows_lines_as_the_job_prints_them(browser: Browser, xray_server: str,
                                                        xray_world: XRayWorld) -> None:  # fmt: skip
    connection = xray_world.provider.connect("xr-alice")
    release = Path(xray_world.home / "release")
    # the printed lines ("stage 1") never appear verbatim in the echoed entrypoint ("'stage', 1")
    script = (f"import os, time\nprint('stage', 1, flush=True)\n"
              f"while not os.path.exists({str(release)!r}): time.sleep(0.1)\n"
              "print('stage', 2, flush=True)")  # fmt: skip
    ids: list[str] = []
    runner = threading.Thread(target=lambda: RayJobs.of(connection).submit_and_follow(
        entrypoint=f"python -c {shlex.quote(script)}", on_line=lambda _: None, on_submitted=ids.append),
        daemon=True)  # fmt: skip
    runner.start()
    page = as_user(browser, xray_server, "alice").new_page()
    page.goto("/clusters/local/ml/xr-alice")
    expect(page.locator("#nodes tbody tr")).to_have_count(1)  # the head only
    job_link = page.locator("#jobs a", has_text="logs").first
    expect(job_link).to_be_visible(timeout=30_000)
    shot(page, "cluster")
    job_link.click()
    log = page.locator("#log")
    expect(log).to_contain_text("stage 1", timeout=30_000)
    expect(log).not_to_contain_text("stage 2")  # the job is still running: we saw the line live
    expect(page.locator("#job-status")).to_have_text("RUNNING", timeout=15_000)  # polled while it runs
    release.touch()
    expect(log).to_contain_text("stage 2", timeout=30_000)
    expect(page.locator("#stream-state")).to_have_text("job ended: SUCCEEDED")
    expect(page.locator("#job-status")).to_have_text("SUCCEEDED")
    shot(page, "job-logs")
    download = page.locator("#download").get_attribute("href")
    assert download == f"/api/clusters/local/ml/xr-alice/jobs/{ids[0]}/logs"
    runner.join(timeout=30)


def test_a_deleted_clusters_job_opens_from_the_archive(browser: Browser, xray_server: str,
                                                       xray_world: XRayWorld) -> None:  # fmt: skip
    provider = xray_world.provider
    provider.create(xray_world.spec("xr-gone", "alice", "ads"))
    provider.wait_ready("xr-gone", timeout=180)
    connection = provider.connect("xr-gone")
    ids: list[str] = []
    # In a thread: Playwright's sync API keeps an event loop running in this one.
    job = threading.Thread(target=lambda: ids.append(RayJobs.of(connection).submit_and_follow(
        entrypoint="python -c \"print('kept', 'after', 'deletion')\"", on_line=lambda _: None).job_id))  # fmt: skip
    job.start()
    job.join(timeout=180)
    [job_id] = ids
    provider.delete("xr-gone")  # the job's log is archived first
    page = as_user(browser, xray_server, "alice").new_page()
    page.goto("/")
    page.locator("header a", has_text="deleted clusters").click()
    archived = page.locator("#archive tbody tr", has_text="xr-gone")
    expect(archived).to_have_count(1)
    archived.locator("a", has_text=job_id).click()
    expect(page.locator("#archived")).to_have_text("archived")
    expect(page.locator("#job-status")).to_have_text("SUCCEEDED")
    expect(page.locator("#log")).to_contain_text("kept after deletion")
    shot(page, "archived-job")
