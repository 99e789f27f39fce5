"""The dashboard's pages in Chromium against the real stack (tests/dashboard/conftest.py):
log in, every page shows what the API holds and follows it live, operators act and others
see it, viewers see no controls, engineers run a what-if, the pages reconnect after the
API restarts; no page logs a console error. Each page's screenshot is saved."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import pytest

from api.auth import Role
from tests.dashboard.conftest import PEOPLE, Browsers, Plantside, rows, wait_for

pytestmark = [pytest.mark.slow]

RUL = """query($id: ID!) { asset(id: $id) { rul { medianHours
  confidenceInterval { lower upper } modelVersion failureModeShares { failureMode share } } } }"""


def hours_text(value: float) -> str:
    """As the dashboard writes hours (ui.js ``hours``)."""
    if value >= 48:
        return f"{value / 24:,.1f} d"
    return f"{value:,.0f} h"


def test_login_refuses_a_wrong_password_then_lets_people_in(
    plantside: Plantside, browsers: Browsers
) -> None:
    tab = browsers.tab(None)
    page = tab.page
    page.goto(f"{plantside.url}/#/alerts")
    page.get_by_label("User name").fill("olga")
    page.get_by_label("Password").fill("not her password")
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("alert").wait_for()
    assert "unknown user or wrong password" in page.get_by_role("alert").inner_text()
    assert page.locator("header.top").is_hidden()
    tab.errors.clear()  # the refused POST is logged by the browser (401), as it should be
    page.get_by_label("Password").fill(PEOPLE[Role.OPERATOR][1])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector("#connection[data-state=live]")
    assert page.url.endswith("#/alerts")  # where the person was going
    assert page.locator("#who").inner_text() == "olga (operator)"
    page.get_by_role("button", name="Log out").click()
    page.get_by_label("User name").wait_for()
    assert "tf_session" not in {c["name"] for c in page.context.cookies()}


def test_fleet_lists_every_machine_and_filters(plantside: Plantside, browsers: Browsers) -> None:
    tab = browsers.tab(Role.VIEWER)
    page = tab.page
    tab.goto(plantside, "fleet")
    page.wait_for_selector("table.fleet[data-ready=true]")
    listed = page.locator("table.fleet tbody tr[data-machine]")
    ids = {listed.nth(i).get_attribute("data-machine") for i in range(listed.count())}
    assert ids == {m.id for m in plantside.plant.machines}
    # every machine that sent data shows a status word, not only a colour
    wait_for(
        lambda: page.locator("tr[data-machine] [data-status=unknown]").count() == 0,
        60,
        "every machine's first state",
    )
    # live: a machine's vibration beyond its critical limit turns its row, with no reload
    spec = plantside.machine("M-105")
    vibration = next(s for s in spec.sensors if s.name == "vibration")
    assert vibration.critical_high is not None
    now = int(time.time() * 1000)
    hot = rows(spec, now - 10_000, 2, step_ms=10_000, vibration=vibration.critical_high * 1.5)
    plantside.send(hot, spec.site)
    row = page.locator('tr[data-machine="M-105"]')
    row.locator("[data-field=status] [data-status=alarm]").wait_for(timeout=10_000)
    assert "alarm" in row.locator("[data-field=status]").inner_text()  # a word, not a colour
    # and the first RUL predictions arrive in their rows as they are made
    row = page.locator('tr[data-machine="M-101"] [data-field=rulMedianHours]')
    wait_for(lambda: row.inner_text() != "–", 180, "M-101's first RUL prediction on the page")
    tab.shot("fleet")
    page.get_by_label("Search").fill("P-20")
    assert page.locator("tr[data-machine]").count() == len(
        [m for m in plantside.plant.machines if "P-20" in m.id]
    )
    page.get_by_label("Search").fill("")
    page.get_by_role("button", name="Health").click()  # sort: least healthy first
    assert page.locator("th[aria-sort=ascending]").inner_text().startswith("Health")


def test_a_telemetry_post_shows_on_the_machine_page_within_a_second(
    plantside: Plantside, browsers: Browsers
) -> None:
    spec = plantside.machine("M-102")
    tab = browsers.tab(Role.VIEWER)
    page = tab.page
    tab.goto(plantside, f"machine/{spec.id}")
    sensor = spec.sensors[0]
    cell = f'tr[data-sensor="{spec.id}.{sensor.name}"] [data-field=value]'
    page.wait_for_selector(cell)
    took = []
    for k, value in enumerate((41.25, 42.5, 43.75)):
        reading = {
            "sensor_id": f"{spec.id}.{sensor.name}",
            "timestamp": int(time.time() * 1000) + k,
            "value": value,
            "quality": "good",
        }
        began = time.perf_counter()
        plantside.send([reading], spec.site)
        page.wait_for_function(
            "([sel, v]) => document.querySelector(sel).dataset.value === String(v)",
            arg=[cell, value],
            timeout=5_000,
        )
        took.append(time.perf_counter() - began)
    assert sorted(took)[1] < 1.0, took  # the median of three


def test_the_machine_page_draws_the_survival_curve_of_the_model(
    plantside: Plantside, browsers: Browsers
) -> None:
    machine = "M-101"
    rul = wait_for(
        lambda: plantside.graphql(RUL, Role.VIEWER, {"id": machine})["asset"]["rul"],
        120,
        f"{machine}'s first RUL prediction",
    )
    sensor = plantside.machine(machine).sensors[0].name
    wait_for(
        lambda: plantside.call(
            "GET",
            f"/api/v1/sensors/{machine}.{sensor}/timeseries",
            token=plantside.token(Role.VIEWER),
        )[1].get("data_points"),
        120,
        "the history writer to store the readings",
    )
    tab = browsers.tab(Role.VIEWER)
    page = tab.page
    tab.goto(plantside, f"machine/{machine}")
    page.wait_for_selector(".survival[data-drawn=true] canvas")
    facts = page.locator("dl[data-median]")
    shown = float(facts.get_attribute("data-median") or "nan")
    current = plantside.graphql(RUL, Role.VIEWER, {"id": machine})["asset"]["rul"]
    assert shown in (rul["medianHours"], current["medianHours"])
    expected = current if shown == current["medianHours"] else rul
    ci = expected["confidenceInterval"]
    assert facts.locator("[data-field=median]").inner_text() == hours_text(shown)
    assert facts.locator("[data-field=interval]").inner_text() == (
        f"{hours_text(ci['lower'])} – {hours_text(ci['upper'])}"
    )
    assert facts.locator("[data-field=model]").inner_text() == expected["modelVersion"]
    # each failure mode's share of the predicted failure, largest first, as the API has it
    shares = expected["failureModeShares"]
    assert len(shares) >= 2, shares  # a motor has several failure modes in the example plant
    assert page.locator("table.mode-shares tbody tr").evaluate_all(
        "rows => rows.map((r) => r.dataset.mode)"
    ) == [m["failureMode"] for m in shares]
    # the canvas has the curve, the shaded interval and the median line drawn on it
    painted = page.evaluate(
        """() => { const c = document.querySelector('.survival canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }"""
    )
    assert painted > 1000
    page.wait_for_selector(".trends[data-ready=true] figure.trend canvas")
    assert page.locator("figure.trend").count() == len(plantside.machine(machine).sensors)
    first = page.locator(f"figure.trend[data-sensor={sensor}]")
    assert int(first.get_attribute("data-points") or 0) > 0
    assert first.get_attribute("data-aggregation") == "1m"  # a day: 1-minute buckets
    tab.shot("machine")


def _hot_seal(plantside: Plantside) -> dict[str, Any]:
    """A pump's seal beyond the plant's hot-seal limit: its alert, as the API lists it."""
    pump = next(m for m in plantside.plant.machines if m.type == "pump-75kw")
    now = int(time.time() * 1000)
    plantside.send(rows(pump, now - 20_000, 3, step_ms=10_000, seal_temp=92.0), pump.site)
    query = """query($m: ID) { alerts(filter: {machineId: $m}) { alertId ruleId status } }"""

    def raised() -> Any:
        alerts = plantside.graphql(query, Role.VIEWER, {"m": pump.id})["alerts"]
        return next((a for a in alerts if a["ruleId"] == "hot-seal"), None)

    return dict(wait_for(raised, 60, "the hot-seal alert"))


def test_an_operator_acknowledges_an_alert_and_another_page_sees_it(
    plantside: Plantside, browsers: Browsers
) -> None:
    alert = _hot_seal(plantside)
    assert alert["status"] == "open", alert
    watcher = browsers.tab(Role.VIEWER)
    watcher.goto(plantside, "alerts")
    operator = browsers.tab(Role.OPERATOR)
    operator.goto(plantside, "alerts")
    row = f'tr[data-alert="{alert["alertId"]}"]'
    for tab in (watcher, operator):
        tab.page.wait_for_selector(f"{row}[data-status=open]")
    operator.shot("alerts")
    operator.page.locator(f"{row} [data-action=acknowledge]").click()
    dialog = operator.page.get_by_role("dialog")
    dialog.get_by_label("Why").fill("seal flush checked, watching it")
    dialog.get_by_role("button", name="Acknowledge").click()
    watcher.page.wait_for_selector(f"{row}[data-status=acknowledged]", timeout=5_000)
    who = watcher.page.locator(f"{row} [data-field=who]").inner_text()
    assert "acknowledged by olga" in who and "seal flush checked" in who
    # keyboard: the operator's next action is reachable and the dialog opens with Enter
    operator.page.locator(f"{row} [data-action=shelve]").focus()
    operator.page.keyboard.press("Enter")
    operator.page.get_by_role("dialog").wait_for()
    operator.page.keyboard.press("Escape")
    assert operator.page.get_by_role("dialog").count() == 0


def test_a_viewer_sees_no_controls_and_the_api_refuses_them_anyway(
    plantside: Plantside, browsers: Browsers
) -> None:
    _hot_seal(plantside)
    tab = browsers.tab(Role.VIEWER)
    page = tab.page
    tab.goto(plantside, "alerts")
    page.wait_for_selector("tbody[data-ready=true] tr[data-alert]")
    assert page.locator("[data-action]").count() == 0
    assert page.get_by_role("columnheader", name="Actions").count() == 0
    tab.goto(plantside, "maintenance")
    page.wait_for_selector(".gantt[data-ready=true]")
    assert page.get_by_role("button", name="Replan now").count() == 0
    tab.goto(plantside, "machine/M-101")
    page.wait_for_selector("#anomalies-title")
    assert page.get_by_role("button", name="Acknowledge").count() == 0
    assert page.locator("[data-nav=whatif]").is_hidden()
    tab.goto(plantside, "whatif")
    page.get_by_text("What-if needs the engineer role.").wait_for()
    assert page.locator("form.whatif").count() == 0
    refused = page.evaluate(
        """async () => { const s = await (await fetch('/api/v1/session')).json();
        const r = await fetch('/graphql', {method: 'POST', headers: {'content-type':
        'application/json', 'x-csrf-token': s.csrf_token}, body: JSON.stringify({query:
        'mutation { replan { plannedAt } }'})}); return (await r.json()).errors[0]; }"""
    )
    assert refused["extensions"]["code"] == "forbidden"


def test_the_maintenance_page_plans_and_exports(plantside: Plantside, browsers: Browsers) -> None:
    order = plantside.graphql(
        """mutation($i: WorkOrderInput!) { createWorkOrder(input: $i, idempotencyKey: "dash-1")
        { workorderId } }""",
        Role.OPERATOR,
        {
            "i": {
                "assetId": "M-107",
                "type": "corrective",
                "priority": "high",
                "title": "Replace the drive-end bearing",
                "estimatedDurationHours": 4,
                "requiredSkills": ["mechanical", "bearings"],
            }
        },
    )["createWorkOrder"]["workorderId"]
    tab = browsers.tab(Role.OPERATOR)
    page = tab.page
    tab.goto(plantside, "maintenance")
    page.wait_for_selector(f'table.orders tr[data-workorder="{order}"]')
    page.wait_for_selector(".gantt[data-ready=true] .vis-item.work")
    assert int(page.locator(".gantt").get_attribute("data-visits") or 0) >= 1
    assert page.locator(".vis-item.vis-background.shift").count() > 0
    draws = int(page.locator(".gantt").get_attribute("data-draws") or 0)
    page.get_by_role("button", name="Replan now").click()
    page.wait_for_function(
        "(n) => { const g = document.querySelector('.gantt'); return g.dataset.ready === 'true'"
        " && Number(g.dataset.draws) > n && g.querySelector('.vis-item.work'); }",
        arg=draws,
    )
    href = page.get_by_role("link", name="Export CSV").get_attribute("href")
    text = page.evaluate("async (h) => (await fetch(h)).text()", href)
    exported = list(csv.DictReader(io.StringIO(text)))
    assert order in {r["workorder_id"] for r in exported}
    tab.shot("maintenance")


def test_an_engineer_runs_a_what_if_and_sees_its_curves(
    plantside: Plantside, browsers: Browsers
) -> None:
    tab = browsers.tab(Role.ENGINEER)
    page = tab.page
    tab.goto(plantside, "whatif?machine=P-201")
    page.get_by_label("Load factor (1 = as now)").fill("1.4")
    page.get_by_label("Maintenance").select_option("later")
    page.get_by_label("in days").fill("7")
    page.get_by_label("Horizon (days)").fill("30")
    page.get_by_label("Simulated paths").fill("300")
    page.get_by_role("button", name="Run").click()
    page.wait_for_selector(".results[data-drawn=true]", timeout=120_000)
    chart = page.locator(".results .projection").first
    assert chart.locator("canvas").count() == 1
    legend = chart.inner_text()
    assert "P(failed), unchanged" in legend and "P(failed), scenario" in legend
    # the RUL: its chart, or why there is none (the median beyond the horizon in both)
    assert page.locator(".results .projection canvas").count() == 2 or (
        "beyond the horizon" in page.locator(".results").inner_text()
    )
    cells = page.locator(".results table.compare tbody tr")
    assert cells.count() == 2
    assert cells.nth(0).locator("th").inner_text() == "unchanged"
    tab.shot("whatif")


def test_pages_reconnect_after_the_api_restarts(plantside: Plantside, browsers: Browsers) -> None:
    spec = plantside.machine("M-103")
    tab = browsers.tab(Role.VIEWER)
    page = tab.page
    tab.goto(plantside, f"machine/{spec.id}")
    cell = f'tr[data-sensor="{spec.id}.{spec.sensors[0].name}"] [data-field=value]'
    page.wait_for_selector(cell)
    page.evaluate(
        """() => { window.seen = []; const el = document.getElementById('connection');
        new MutationObserver(() => window.seen.push(el.dataset.state + ' ' +
          el.innerText.trim())).observe(el, {attributes: true, subtree: true}); }"""
    )
    plantside.restart_api()
    page.wait_for_selector("#connection[data-state=live]", timeout=60_000)
    seen = page.evaluate("() => window.seen")
    assert any(s.startswith("reconnecting") and "reconnecting…" in s for s in seen), seen
    reading = {
        "sensor_id": f"{spec.id}.{spec.sensors[0].name}",
        "timestamp": int(time.time() * 1000),
        "value": 57.5,
        "quality": "good",
    }
    plantside.send([reading], spec.site)
    page.wait_for_function(
        "(sel) => document.querySelector(sel).dataset.value === '57.5'", arg=cell, timeout=10_000
    )
    # while the API was away the browser logged its failed connections; nothing else
    tab.errors[:] = [
        e for e in tab.errors if "WebSocket" not in e and "Failed to load resource" not in e
    ]
