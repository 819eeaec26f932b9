"""`tinywindow-otel stack --fast-alerts --scenario breach|calm` end to end: what a new user sees in the terminal.

The real command (the console script), real Prometheus and Alertmanager, every
port picked free, the repository's rules. The runs start with the test session
and go on in the background while the rest of the suite runs
(``monitoring/stack_runs.py``, launched by ``conftest.py``); these checks run
last. Each run's output is read line by line as it is printed:

* breach, on each toolchain: each of the eight core alerts prints FIRING once,
  after its condition was switched on, and RESOLVED once, after it was switched
  off, within ``BREACH_BUDGET`` seconds of the launch. Besides them only the
  Watchdog (the dead-man's switch, every minute) and APIErrorBudgetBurn may
  page: the phase where every binance call fails also burns binance's error
  budget 14.4 times too fast, the same incident seen by the budget alert; it
  must resolve too.
* calm, three random seeds: nothing but the Watchdog notifies, and no other
  alert ever fired in Prometheus (an inhibited one included), for as long as
  the session ran (at least ``CALM_SECONDS`` of scrapes): every shortened `for:`
  of 10 s elapses many times over, and the first minute's short rate windows
  are the noisiest.
"""

from __future__ import annotations

import os

import pytest

from monitoring.assets import CORE_ALERTS
from monitoring.stack_runs import BREACH_BUDGET, CALM_INTERVAL, CALM_SECONDS, SCENARIOS, Scenarios, StackRun
from tinywindow_otel.cli.demo import BREACH_PHASES

#: Alerts besides the eight core ones that the breach scenario may page, and why (module docstring).
BREACH_ALSO = {"APIErrorBudgetBurn"}
RECEIVER = {"critical": "/trading-pager", "warning": "/trading-chat", "none": "/deadmans-switch"}


@pytest.fixture
def scenarios(request) -> Scenarios:
    """The session's background runs (started by conftest.py); every toolchain must be there under CI."""
    runs = request.config.stash.get(SCENARIOS, None)
    assert runs is not None, "the scenario runs were not launched at the start of the session (conftest.py)"
    if runs.missing and os.environ.get("CI") == "true":
        pytest.fail("; ".join(runs.missing))
    if not runs.breach and not runs.calm:
        pytest.skip("; ".join(runs.missing))
    return runs


def last_resolved(run: StackRun) -> float:
    return max(at for at, m in run.notifications() if m["alert"] in CORE_ALERTS and m["status"] == "RESOLVED")


def timeline(run: StackRun) -> str:
    return "\n".join(f"{at:6.1f}s {m['status']:8} {m['alert']}" for at, m in run.notifications()
                     if m["alert"] != "Watchdog")


@pytest.mark.timeout(BREACH_BUDGET + 120)
def test_breach_shows_every_core_alert_firing_then_resolved_within_five_minutes(scenarios):
    assert scenarios.breach, "no breach run was launched"
    for breach in scenarios.breach:
        breach.result(timeout=max(0.0, BREACH_BUDGET + 60 - breach.run.age))
    runs = [breach.run for breach in scenarios.breach]
    done = {run.label: last_resolved(run) for run in runs}

    for run in runs:
        notes, conditions, output = run.notifications(), run.conditions(), run.output
        for alert, (severity, _, _) in CORE_ALERTS.items():
            mine = [(at, m) for at, m in notes if m["alert"] == alert]
            assert [m["status"] for _, m in mine] == ["FIRING", "RESOLVED"], f"{run.label}: {alert}\n{output}"
            (fired, firing), (resolved, _) = mine
            # Caused by the scenario: fired after its condition went on, resolved after it went off.
            assert conditions[(alert, "on")] < fired < resolved, f"{run.label}: {alert}\n{output}"
            assert conditions[(alert, "off")] < resolved, f"{run.label}: {alert}\n{output}"
            assert resolved <= BREACH_BUDGET, f"{run.label}: {alert}\n{output}"
            assert (firing["severity"], firing["receiver"]) == (severity, RECEIVER[severity]), output
        for at, match in notes:
            alert = match["alert"]
            if alert in CORE_ALERTS:
                continue
            if alert == "Watchdog":
                assert (match["status"], match["receiver"]) == ("FIRING", RECEIVER["none"]), output
                continue
            assert alert in BREACH_ALSO, f"{run.label}: unexpected {alert}\n{output}"
        for alert in BREACH_ALSO:
            also = [(at, m["status"]) for at, m in notes if m["alert"] == alert]
            assert [status for _, status in also] in ([], ["FIRING", "RESOLVED"]), f"{run.label}: {alert}\n{output}"
            if also:  # from the API error phase
                assert conditions[("HighAPIErrorRate", "on")] < also[0][0], output
        assert {alert for alert, _ in conditions} == {phase.alert for phase in BREACH_PHASES}
    print("\n".join(f"breach on {run.label}: last RESOLVED {done[run.label]:.1f}s after launch\n{timeline(run)}"
                     for run in runs))


def scraped_seconds(run: StackRun) -> float:
    result = run.query(f'sum_over_time(up{{job="tinywindow"}}[{int(run.age) + 60}s])')
    return float(result[0]["value"][1]) * CALM_INTERVAL if result else 0.0


@pytest.mark.timeout(CALM_SECONDS + 150)
def test_calm_pages_nothing_but_the_watchdog(scenarios):
    runs = scenarios.calm
    assert runs, "no calm run was launched"
    for run in runs:
        run.wait(lambda run=run: scraped_seconds(run) >= CALM_SECONDS, CALM_SECONDS + 60 + run.age,
                 f"{CALM_SECONDS}s of successful scrapes")
    # Ever firing in Prometheus since the launch, not only what reached the terminal.
    ever = {run.label: {r["metric"]["alertname"] for r in run.query(
                f'count by (alertname) (max_over_time(ALERTS{{alertstate="firing"}}[{int(run.age) + 60}s]))')}
            for run in runs}
    lasted = {run.label: run.age for run in runs}
    for run in runs:
        run.stop()

    for run in runs:
        output = run.output
        assert ever[run.label] == {"Watchdog"}, f"{run.label}: {ever[run.label]}\n{output}"
        paged = {m["alert"] for _, m in run.notifications()}
        assert paged == {"Watchdog"}, f"{run.label}: {paged}\n{output}"
        assert not run.conditions(), output
    print("\n".join(f"calm on {label}: {seconds:.0f}s, nothing paged" for label, seconds in lasted.items()))
