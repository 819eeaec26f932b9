"""Calibration: decision ids, outcomes by confidence decile, Brier score, bounded pending decisions."""

from __future__ import annotations

import gc
import json
import math
import threading
import tracemalloc

import pytest
from helpers import sample_value

from tinywindow_otel.calibration import CONFIDENCE_BUCKETS, CalibrationTracker, DecisionId, confidence_bucket
from tinywindow_otel.catalog import CALIBRATION_METRICS
from tinywindow_otel.decorators import agent_decision
from tinywindow_otel.exporters import agent_exporter
from tinywindow_otel.metrics import REGISTRY

OUTCOMES = "tinywindow_agent_outcomes_total"
BRIER = "tinywindow_agent_brier_score"
EXPIRED = "tinywindow_agent_decisions_expired_total"


@pytest.fixture(autouse=True)
def fresh_calibration():
    agent_exporter.calibration.reset()
    yield
    agent_exporter.calibration.reset()


def dropped(metric, reason):
    return REGISTRY.get("tinywindow_otel_dropped_measurements_total").labels(metric, reason).get()


def test_deciles():
    assert CONFIDENCE_BUCKETS[0] == "0.0-0.1" and CONFIDENCE_BUCKETS[-1] == "0.9-1.0"
    assert confidence_bucket(0.0) == "0.0-0.1"
    assert confidence_bucket(0.83) == "0.8-0.9"
    assert confidence_bucket(0.3) == "0.3-0.4"
    assert confidence_bucket(0.7) == "0.7-0.8"
    assert confidence_bucket(1.0) == "0.9-1.0"


def test_linked_outcomes_on_metrics_and_brier_score(scrape_metrics):
    # Four 0.8 decisions, three wins: (0.2^2 * 3 + 0.8^2) / 4 = 0.19.
    ids = [agent_exporter.record_decision("analyst", "buy", 0.8) for _ in range(4)]
    assert len(set(ids)) == 4 and all(isinstance(i, DecisionId) for i in ids)
    for decision_id, pnl in zip(ids, (10.0, 5.0, 1.0, -7.0)):
        assert agent_exporter.record_outcome(decision_id, pnl)
    families = scrape_metrics()
    for spec in CALIBRATION_METRICS:
        if spec.name != EXPIRED:
            assert spec.exposed_name in families, spec.exposed_name
    assert sample_value(families, OUTCOMES, agent="analyst", confidence_bucket="0.8-0.9", outcome="win") == 3.0
    assert sample_value(families, OUTCOMES, agent="analyst", confidence_bucket="0.8-0.9", outcome="loss") == 1.0
    assert sample_value(families, BRIER, agent="analyst") == pytest.approx(0.19)


def test_decision_context_returns_the_id():
    with agent_decision("trader") as d:
        returned = d.record("sell", 0.3)
    assert returned == d.decision_id and returned is not None
    assert agent_exporter.record_outcome(d.decision_id, -20.0)
    assert REGISTRY.get(OUTCOMES).labels("trader", "0.3-0.4", "loss").get() == 1.0
    assert REGISTRY.get(BRIER).labels("trader").get() == pytest.approx(0.09)


def test_an_id_stored_as_json_links_after_a_restart():
    decision_id = agent_exporter.record_decision("analyst", "buy", 0.9)
    stored = json.dumps(list(decision_id))
    restarted = CalibrationTracker()  # a new process: nothing in memory about the decision
    assert restarted.record_outcome(json.loads(stored), 3.0)
    assert REGISTRY.get(OUTCOMES).labels("analyst", "0.9-1.0", "win").get() == 1.0


def test_sliding_window_forgets_old_outcomes():
    tracker = CalibrationTracker(window=3)
    for _ in range(3):
        tracker.record_outcome(tracker.register("a", 1.0), -1.0)  # maximally wrong: 1.0 each
    assert REGISTRY.get(BRIER).labels("a").get() == 1.0
    for _ in range(3):
        tracker.record_outcome(tracker.register("a", 1.0), 1.0)  # right: 0.0 each, the window is full of them
    assert REGISTRY.get(BRIER).labels("a").get() == 0.0


def test_a_second_outcome_for_one_decision_is_counted_not_linked():
    decision_id = agent_exporter.record_decision("analyst", "buy", 0.6)
    assert agent_exporter.record_outcome(decision_id, 1.0)
    assert not agent_exporter.record_outcome(decision_id, 1.0)
    assert not agent_exporter.record_outcome(list(decision_id), -1.0)
    assert dropped(OUTCOMES, "duplicate_outcome") == 2.0
    assert REGISTRY.get(OUTCOMES).labels("analyst", "0.6-0.7", "win").get() == 1.0


def test_nan_outcome_is_dropped_and_the_decision_stays_linkable():
    decision_id = agent_exporter.record_decision("analyst", "buy", 0.6)
    assert not agent_exporter.record_outcome(decision_id, math.nan)
    assert dropped(OUTCOMES, "nan") == 1.0
    assert agent_exporter.record_outcome(decision_id, 2.0)


def test_breakeven_is_neither_win_nor_loss():
    decision_id = agent_exporter.record_decision("analyst", "hold", 0.5)
    assert not agent_exporter.record_outcome(decision_id, 0.0)
    assert all(m.get() == 0 for m in REGISTRY.get(OUTCOMES).series())


@pytest.mark.parametrize("bad", ["no-such-id", 42, ["analyst", 0.5, 1.0], ["analyst", 1.5, 1.0, 1],
                                 [None, 0.5, 1.0, 1], {"agent": "analyst"}])
def test_something_that_is_not_a_decision_id_raises_naming_the_metric(bad):
    with pytest.raises(TypeError, match=OUTCOMES):
        agent_exporter.record_outcome(bad, 1.0)


def test_bad_input_raises_naming_the_metric():
    decision_id = agent_exporter.record_decision("analyst", "buy", 0.6)
    with pytest.raises(TypeError, match=OUTCOMES):
        agent_exporter.record_outcome(decision_id, "12.5")
    with pytest.raises(ValueError, match=BRIER):
        CalibrationTracker(window=0)
    with pytest.raises(ValueError, match=EXPIRED):
        CalibrationTracker(ttl_seconds=math.inf)


def test_confidence_outside_0_1_is_not_tracked():
    with pytest.raises(ValueError, match="tinywindow_agent_confidence"):
        agent_exporter.record_decision("analyst", "buy", 1.5)
    assert agent_exporter.record_decision("analyst", "buy", math.nan) is None  # dropped and counted
    assert CalibrationTracker().register("analyst", 1.5) is None


def test_outcomes_after_the_time_to_live_expire_and_count():
    tracker = CalibrationTracker(ttl_seconds=60.0)
    old = tracker.register("slow", 0.7, now=1000.0)
    assert not tracker.record_outcome(old, 1.0, now=1061.0)
    assert REGISTRY.get(EXPIRED).labels("slow").get() == 1.0
    assert tracker.record_outcome(tracker.register("slow", 0.7, now=1000.0), 1.0, now=1059.0)


def test_unlinked_decisions_cost_no_memory():
    tracker = CalibrationTracker()
    tracker.register("warm-up", 0.5)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(100_000):
            tracker.register("busy", 0.5)  # ids dropped at once, as for decisions that never trade
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(tracker) == 0
    assert grown < 10_000, f"{grown} bytes kept for 100,000 unlinked decisions"


def test_remembered_links_are_bounded():
    tracker = CalibrationTracker(max_linked=100)
    for _ in range(1_000):
        tracker.record_outcome(tracker.register("busy", 0.5), 1.0)
    assert len(tracker) == 100


def test_concurrent_decisions_and_outcomes():
    tracker = CalibrationTracker()
    barrier = threading.Barrier(4)
    errors = []

    def work(agent):
        try:
            barrier.wait()
            for i in range(500):
                tracker.record_outcome(tracker.register(agent, 0.9), 1.0 if i % 10 else -1.0)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"agent{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(tracker) == 2000
    for i in range(4):
        wins = REGISTRY.get(OUTCOMES).labels(f"agent{i}", "0.9-1.0", "win").get()
        losses = REGISTRY.get(OUTCOMES).labels(f"agent{i}", "0.9-1.0", "loss").get()
        assert (wins, losses) == (450.0, 50.0)
        # 90 % wins at 0.9 confidence: perfectly calibrated, Brier = 0.9*0.01 + 0.1*0.81 = 0.09.
        assert REGISTRY.get(BRIER).labels(f"agent{i}").get() == pytest.approx(0.09)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_forked_child_links_its_own_decisions_even_if_a_parent_thread_held_the_lock():
    import os

    from helpers import wait_until

    tracker = agent_exporter.calibration
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            tracker.record_outcome(tracker.register("busy", 0.5), 1.0)

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    try:
        for _ in range(10):
            pending_before = tracker.register("parent", 0.9)
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    ok = tracker.record_outcome(tracker.register("child", 0.9), 1.0)
                    code = 0 if ok and tracker.record_outcome(pending_before, 1.0) else 2
                finally:
                    os._exit(code)

            def reaped(pid=pid):
                done, status = os.waitpid(pid, os.WNOHANG)
                return status + 1 if done else None

            try:
                status = wait_until(reaped, timeout=10, interval=0.01, what="the forked child") - 1
            except AssertionError:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                raise
            assert os.waitstatus_to_exitcode(status) == 0
    finally:
        stop.set()
        thread.join(10)
