"""The Dagster UI in headless Chromium: asset graph, lineage, a launched materialisation, the evaluation pictures.

`dagster dev` (webserver and daemon) runs on loopback with a temporary DAGSTER_HOME; Playwright drives
Debian's Chromium. Screenshots go to test-artifacts/ui/ (git-ignored).
"""

import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from droughtwatch_assets.definitions import assets
from droughtwatch_assets_tests.conftest import REPO_ROOT, dagster_home, free_port, wait_for_http

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "ui"
ASSETS = [asset.key.to_user_string() for asset in assets]
GROUPS = ["data", "training", "deployment", "evaluation"]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory):
    home = dagster_home(tmp_path_factory.mktemp("dagster-home"))
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DROUGHTWATCH_DATA_DIR": str(home / "data"),
        "DROUGHTWATCH_TRACKER": "none",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(home / "dagster-dev.log", "w")
    process = subprocess.Popen(
        [Path(sys.executable).parent / "dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/server_info", process, timeout=180)
        yield f"http://127.0.0.1:{port}", home
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:  # a run's processes still shutting down: what the tests read is read
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def page(dagster_ui):
    playwright_api = pytest.importorskip("playwright.sync_api")
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: install Debian's chromium (make test does)"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(30_000)
        yield page
        browser.close()


def shows(label: str, name: str) -> bool:
    """The node label is the name, or the name middle-truncated to fit ("process…_tfrecords")."""
    label = label.strip()
    if "…" not in label:
        return label == name
    head, tail = label.split("…", 1)
    return name.startswith(head) and name.endswith(tail)


def open_page(page, url: str) -> None:
    page.goto(url)
    page.wait_for_load_state("networkidle")
    skip = page.get_by_role("button", name="Skip")  # the first-visit "Join the Dagster community" dialog
    if skip.count():
        skip.click()


def test_asset_graph_shows_every_asset(dagster_ui, page):
    url, _ = dagster_ui
    expanded = ",".join(f"global@global:{group}" for group in GROUPS)
    open_page(page, f"{url}/asset-groups?expanded={urllib.parse.quote(expanded)}")
    page.get_by_text("model_evaluation", exact=True).wait_for()
    labels = page.locator("[class*='assetName']").all_inner_texts()
    page.screenshot(path=SCREENSHOTS / "01-asset-graph.png")
    assert sorted(name for name in ASSETS if any(shows(label, name) for label in labels)) == sorted(ASSETS), labels
    for group in GROUPS:
        assert page.get_by_text(group, exact=True).count() >= 1


def test_lineage_of_the_onnx_model_shows_its_upstream_chain(dagster_ui, page):
    url, _ = dagster_ui
    open_page(page, f"{url}/assets/onnx_model?view=lineage&lineageScope=upstream&lineageDepth=4")
    for name in ("raw_tfrecords", "processed_tfrecords", "trained_model"):
        page.get_by_text(name, exact=True).first.wait_for()
    page.screenshot(path=SCREENSHOTS / "02-onnx-model-lineage.png")
    assert "predictions" not in [t.strip() for t in page.locator("text=predictions").all_inner_texts()]


def test_materialise_the_baseline_partition_from_the_ui(dagster_ui, page):
    url, home = dagster_ui
    expanded = ",".join(f"global@global:{group}" for group in GROUPS)
    open_page(page, f"{url}/asset-groups?expanded={urllib.parse.quote(expanded)}")
    page.get_by_role("button", name=re.compile("Materialize all")).click()
    page.get_by_text("Select a partition or create one").click()
    page.get_by_text("baseline", exact=True).first.click()
    page.screenshot(path=SCREENSHOTS / "03-launch-baseline.png")
    launch = page.get_by_role("button", name="Launch 1 run")
    deadline = time.monotonic() + 90
    # The first click may only close the partition list, and the button stays disabled while the dialog
    # still checks the selection: click until the dialog closes.
    while launch.is_visible() and time.monotonic() < deadline:
        if launch.is_enabled():
            launch.click()
        try:
            launch.wait_for(state="hidden", timeout=5000)
        except Exception:
            continue
    assert not launch.is_visible(), "the launch dialog did not close"
    page.wait_for_timeout(1000)  # a launch error opens its dialog once the mutation answers
    after_launch = page.locator("body").inner_text()
    page.screenshot(path=SCREENSHOTS / "03-after-launch.png")

    open_page(page, f"{url}/runs")
    started = time.monotonic()
    deadline = started + 600
    while time.monotonic() < deadline:
        text = page.locator("body").inner_text()
        if "Success" in text or "Failure" in text:
            break
        if "No runs found" in text and time.monotonic() - started > 60:
            log = (home / "dagster-dev.log").read_text(errors="replace").splitlines()[-60:]
            pytest.fail(
                "no run a minute after the launch. The page after the launch:\n"
                + after_launch[-2000:]
                + "\n\ndagster dev's log:\n"
                + "\n".join(log)
            )
        time.sleep(5)
        page.reload()
        page.wait_for_load_state("networkidle")
    page.screenshot(path=SCREENSHOTS / "04-run-finished.png")
    body = page.locator("body").inner_text()
    assert "Success" in body and "Failure" not in body


def test_model_evaluation_shows_the_confusion_matrix_picture(dagster_ui, page):
    url, _ = dagster_ui
    open_page(page, f"{url}/assets/model_evaluation?view=partitions&partition=baseline")
    page.screenshot(path=SCREENSHOTS / "05-model-evaluation-metadata.png", full_page=True)
    row = page.locator("tr").filter(has_text="confusion_matrix_plot")
    row.get_by_text("Show Markdown").click()  # large markdown opens in a dialog
    picture = page.locator("img[alt='confusion matrix']")
    picture.first.wait_for()
    picture.first.scroll_into_view_if_needed()
    assert picture.first.get_attribute("src").startswith("data:image/png;base64,")
    assert picture.first.evaluate("img => img.naturalWidth") > 100
    page.screenshot(path=SCREENSHOTS / "06-confusion-matrix.png")


def test_the_leaderboard_lists_every_feature_set(dagster_ui, page):
    """After the baseline run above ("Materialize all" includes the leaderboard): one row per partition."""
    url, _ = dagster_ui
    open_page(page, f"{url}/assets/leaderboard?view=events")
    table = page.locator("table:not(:has(table))").filter(has_text="not trained").first  # the leaderboard itself
    table.wait_for()
    page.screenshot(path=SCREENSHOTS / "07-leaderboard.png", full_page=True)
    rows = [row.strip() for row in table.locator("tr").all_inner_texts()]
    for feature_set in ("baseline", "ndvi", "rgb", "all"):
        assert any(row.split()[:1] == [feature_set] for row in rows), rows
    assert sum("not trained" in row for row in rows) == 3 and any("candidate" in row for row in rows), rows


EXPERIMENTS = ["raw_tfrecords", "processed_tfrecords", "trained_model", "onnx_model", "model_evaluation"]
LAUNCH_BACKFILL = """
mutation LaunchPartitionBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""


def test_experiments_job_backfill_as_the_job_page_launches_it(dagster_ui, page):
    """What "Materialize all..." then "Launch backfill" on experiments_job's page sends (a job backfill of the
    selected partitions), the daemon of `dagster dev` running the runs, and the leaderboard that results."""
    import json
    import urllib.request

    import dagster as dg

    url, home = dagster_ui
    params = {
        "selector": {
            "partitionSetName": "experiments_job_partition_set",
            "repositorySelector": {"repositoryLocationName": "droughtwatch_assets", "repositoryName": "__repository__"},
        },
        "assetSelection": [{"path": [name]} for name in [*EXPERIMENTS, "leaderboard", "champion"]],
        "partitionNames": ["ndvi", "rgb"],
        "fromFailure": False,
        "tags": [],
    }
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": LAUNCH_BACKFILL, "variables": {"params": params}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    launched = json.loads(urllib.request.urlopen(request, timeout=60).read())["data"]["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    instance = dg.DagsterInstance.from_config(str(home))
    backfill_runs = dg.RunsFilter(tags={"dagster/backfill": backfill_id})
    ended = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        runs = instance.get_runs(backfill_runs)
        if len(runs) == 2 and all(run.status in ended for run in runs):
            break
        time.sleep(2)
    assert sorted((r.tags["dagster/partition"], r.status) for r in runs) == [
        ("ndvi", dg.DagsterRunStatus.SUCCESS),
        ("rgb", dg.DagsterRunStatus.SUCCESS),
    ]
    open_page(page, f"{url}/runs/b/{backfill_id}")
    page.screenshot(path=SCREENSHOTS / "08-experiments-backfill.png", full_page=True)

    open_page(page, f"{url}/assets/leaderboard?view=events")
    table = page.locator("table:not(:has(table))").filter(has_text="candidate").first
    table.wait_for()
    rows = [row.strip() for row in table.locator("tr").all_inner_texts()]
    page.screenshot(path=SCREENSHOTS / "09-leaderboard-after-experiments.png", full_page=True)
    statuses = {
        row.split()[0]: row.split()[1] for row in rows if row.split()[:1] in (["baseline"], ["ndvi"], ["rgb"], ["all"])
    }
    assert statuses == {"baseline": "candidate", "ndvi": "candidate", "rgb": "candidate", "all": "not"}, rows
