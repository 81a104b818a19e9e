"""The rate estimator and the probing, without ROS: on a simulated token-bucket link (link_sim.py:
what tc tbf and an aggregating radio do to back-to-back messages) and on timing traces recorded from
the real graph on the netns + tc bed (test/data/link_traces)."""
import json
from pathlib import Path

import numpy as np
import pytest

from fsplit_ros.policy import LinkEstimator, LinkProber
from fsplit_ros.policy.probing import MEMBER_MIN_BYTES, train_sizes
from link_sim import TokenBucketLink, run_monitor

RATES = (0.25e6, 1e6, 5e6, 20e6, 50e6)
TRACES = Path(__file__).resolve().parents[1] / "data" / "link_traces"


def ratios(samples, rate_bps, since, until=float("inf")):
    return np.array([r for t, r, _ in samples if since <= t < until]) / rate_bps


def step_to(rate_bps):
    return lambda link, t: link.set_rate(rate_bps, t)


def test_a_single_message_misreads_a_bursty_link_and_a_train_does_not():
    """Why trains: a 24 KB message on an idle 20 Mbit/s tbf link takes 45 % of its bytes/rate (the
    bucket passes its first 12.5 KB at once), the 1.5-1.7x over-estimate issue 17 saw; the second
    half of a train sized by train_sizes crosses at the link's rate."""
    link = TokenBucketLink(20e6, delay_s=0.0, overhead_bytes=0)
    took = link.send(24_000, now=0.0)
    assert 8 * 24_000 / took > 1.5 * 20e6
    sizes = train_sizes(20e6)
    link = TokenBucketLink(20e6, delay_s=0.0, overhead_bytes=0)
    arrivals = [link.send(size, now=10.0) for size in sizes]
    half = len(sizes) // 2
    assert 8 * sum(sizes[half:]) / (arrivals[-1] - arrivals[half - 1]) == pytest.approx(20e6, rel=0.01)


@pytest.mark.parametrize("rate_bps", RATES)
@pytest.mark.parametrize("burst_ms", [None, 8.0])
def test_probe_trains_alone_measure_every_rate(rate_bps, burst_ms):
    """`local` mode: only probes cross the link. tc's bucket (5 ms of the rate) and a radio's bigger
    one (8 ms), 0.3 ms of jitter on every arrival stamp: the estimate stays within 0.8-1.2 of the
    rate (headers make it read ~7 % low at one packet per probe)."""
    burst = None if burst_ms is None else max(1600.0, rate_bps / 8 * burst_ms / 1e3)
    link = TokenBucketLink(rate_bps, burst, jitter_s=0.0003)
    est, prober, samples = run_monitor(link, 30.0)
    r = ratios(samples, rate_bps, since=5.0)
    assert 0.85 <= np.median(r) <= 1.1 and 0.8 <= np.percentile(r, 10) and np.percentile(r, 90) <= 1.2, \
        (np.median(r), np.percentile(r, 10), np.percentile(r, 90))
    # within the probe budget: 5 % of the rate (the train at the first reply aside)
    probe_bytes = prober.trains_sent * sum(train_sizes(rate_bps))
    assert 8 * probe_bytes / 30.0 <= 0.05 * max(rate_bps, prober.floor_bps) * 1.15 + 8 * 3 * MEMBER_MIN_BYTES / 30


@pytest.mark.parametrize("rate_bps, payload_bytes", [(20e6, 23_000), (5e6, 23_000), (1e6, 4_500),
                                                     (0.5e6, 23_000), (0.25e6, 900)])
def test_payload_traffic_does_not_bias_the_estimate(rate_bps, payload_bytes):
    """Image payloads at 20 and 5 Mbit/s (each alone on the link: their timing is burst-biased),
    detector bottleneck payloads at 1 Mbit/s (read 15-30 % low when timed alone), image payloads
    oversubscribing 0.5 Mbit/s (backlogged: they measure the link themselves), split@19 payloads at
    0.25 Mbit/s."""
    link = TokenBucketLink(rate_bps, jitter_s=0.0003)
    est, prober, samples = run_monitor(link, 30.0, payload_bytes=payload_bytes)
    r = ratios(samples, rate_bps, since=5.0)
    assert 0.8 <= np.median(r) <= 1.2 and 0.75 <= np.percentile(r, 10) and np.percentile(r, 90) <= 1.25, \
        (np.median(r), np.percentile(r, 10), np.percentile(r, 90))


def test_backlogged_payloads_measure_the_link_and_pause_the_trains():
    """Payloads published before the previous one arrived (the link was busy) measure it by the
    spacing of their arrivals at the edge, however long each spent queued; the trains pause then.
    (The encoder's flow control keeps payloads from queueing at a steady rate, so this happens
    after a drop the estimate has not caught up with yet.)"""
    est = LinkEstimator(window_s=2.0, outage_s=2.0)
    prober = LinkProber(est, max_fraction=0.5)
    est.add_rtt(0.010, now=0.0)
    prober.due(0.2, 0.0)
    prober.sent([1, 2, 3], 0.0)
    for i in range(3):          # three 23 KB payloads published together on a 1 Mbit/s link
        edge = 1.0 + 0.005 + 0.184 * (i + 1)
        est.add_feedback(23_000, publish_t=1.0, arrival_t=edge + 0.02 + 0.005, edge_residence_s=0.02,
                         edge_received_t=edge)
    assert est.rate_bps == pytest.approx(1e6, rel=0.01) and est.payloads_measure(1.6)
    assert prober.due(0.2, 1.6) == [0] and prober.credit == 0.0
    assert not est.payloads_measure(2.7)


@pytest.mark.parametrize("offset", np.arange(0.0, 1.0, 0.2))
def test_rate_steps_are_followed_within_a_second(offset):
    """20 -> 0.5 Mbit/s under image payloads: image mode (1.8 Mbit/s at 10 fps) is out within half a
    second, and the estimate in band within 1.5 s; 0.5 -> 20 Mbit/s with probes alone (the robot in
    `local`) and 1 -> 50: in band within a second, whatever the phase of the probe period."""
    t_step = 8.0 + offset
    est, _, samples = run_monitor(TokenBucketLink(20e6), 12.0, payload_bytes=23_000,
                                  events=[(t_step, step_to(0.5e6))])
    assert all(r < 1.8e6 for t, r, _ in samples if t >= t_step + 0.5)
    assert all(0.8 <= x <= 1.2 for x in ratios(samples, 0.5e6, since=t_step + 1.5))
    for low, high in ((0.5e6, 20e6), (1e6, 50e6)):
        _, _, samples = run_monitor(TokenBucketLink(low), 12.0, events=[(t_step, step_to(high))])
        settled = [t for t, r, _ in samples if t >= t_step and 0.8 <= r / high <= 1.2]
        assert settled and settled[0] - t_step <= 1.0, (low, high, settled[:1])


@pytest.mark.parametrize("payload_bytes", [0, 23_000])
def test_a_restored_link_is_measured_at_once_not_guessed(payload_bytes):
    """A 3 s cut of a 20 Mbit/s link: after the first reply the rate counts as unknown (the policy
    waits in local) until the train sent at once comes back; measured within 0.5 s of the restore."""
    def cut(link, t):
        link.up = False

    def restore(link, t):
        link.up = True
    est, prober, samples = run_monitor(TokenBucketLink(20e6), 14.0, payload_bytes=payload_bytes,
                                       events=[(8.0, cut), (11.0, restore)])
    assert not any(measured for t, _, measured in samples if 8.7 <= t < 11.0)     # down: not measured
    back = [(t, r) for t, r, measured in samples if t >= 11.0 and measured]
    assert back and back[0][0] - 11.0 <= 0.5 and 0.8 <= back[0][1] / 20e6 <= 1.2, back[:3]
    assert est.outages == 2                          # the first reply, and the one after the cut


def test_estimator_outage_rtt_and_stale_payloads():
    est = LinkEstimator(window_s=2.0, outage_s=0.6)
    est.add_rtt(0.010, now=0.0)
    est.add_rtt(0.004, now=0.1)
    assert est.rtt_s == pytest.approx(0.004) and not est.rate_known(0.1)   # nothing measured yet
    est.add_train([5_000] * 4, [0.5, 0.502, 0.504, 0.506], now=0.51)         # 5 KB / 2 ms = 20 Mbit/s
    assert est.rate_bps == pytest.approx(20e6) and est.rate_known(0.51) and est.outages == 1
    est.add_rtt(0.004, now=5.0)                      # a reply after a silence: an outage ended
    assert est.outages == 2 and not est.rate_known(5.0) and est.rate_bps == pytest.approx(est.initial_rate_bps)
    assert est.rate_known(6.1)                       # ... for at most remeasure_s: then the prior counts
    est.add_feedback(10_000, publish_t=4.0, arrival_t=5.1, edge_residence_s=0.0, edge_received_t=5.09)
    assert est.sample_count() == 0                   # published before the outage ended: queued there
    # an outage never raises a lower measured rate to the prior
    slow = LinkEstimator(window_s=2.0, outage_s=0.6, initial_rate_bps=1e6)
    slow.add_rtt(0.004, now=0.0)
    slow.add_train([1_400, 1_400], [1.0, 1.0448], now=1.1)                   # 0.25 Mbit/s
    assert slow.rate_bps == pytest.approx(0.25e6, rel=0.01)
    slow.add_rtt(0.004, now=3.0)
    assert slow.rate_bps == pytest.approx(0.25e6, rel=0.01)


def test_a_train_inside_the_burst_only_bounds_the_rate_and_asks_for_another():
    est = LinkEstimator()
    prober = LinkProber(est)
    est.add_rtt(0.002, now=0.0)
    prober.due(0.2, 0.0)                                  # the first reply's train
    prober.sent(list(range(1, 4)), 0.0)
    assert not prober.train_wanted()
    est.add_train([1_400, 1_400], [0.001, 0.0012], now=0.01)   # 0.2 ms apart: all in the burst
    assert est.rate_bps >= 10e6 and prober.train_wanted()
    assert sum(prober.due(0.2, 0.02)) >= 10e6 * 0.02 / 8 * 0.99   # at once, sized for the bound


def test_lost_train_members_free_the_next_train():
    """A train whose members were lost (a queue that overflowed when the rate dropped) must not
    block the next one for the whole timeout: a later probe's echo shows them lost."""
    est = LinkEstimator()
    prober = LinkProber(est, max_fraction=0.5)
    est.add_rtt(0.002, now=0.0)
    paddings = prober.due(0.2, 0.0)
    prober.sent(list(range(1, len(paddings) + 1)), 0.0)
    prober.echoed(2, edge_received_t=0.01, now=0.02)      # one member; the other is lost
    nxt = prober.due(0.2, 0.2)
    prober.sent(list(range(10, 10 + len(nxt))), 0.2)
    prober.echoed(10, edge_received_t=0.21, now=0.22)     # the tiny probe sent after the train
    assert prober.trains_lost == 1 and not prober._trains or min(prober._trains) >= 10


def _replay(path: Path):
    """Feed a recorded estimator input trace (link_monitor_node estimator_trace_file) to a fresh
    estimator; returns [(t, rate_bps, rate_known)] after every input and the link's changes
    [(t, true Mbit/s)] where the bench marked them."""
    est, out, link = LinkEstimator(window_s=1.0, outage_s=0.6, max_samples=4), [], []
    for line in path.read_text().splitlines():
        e = json.loads(line)
        if e["kind"] == "link":
            link.append((e["t"], e["rate_mbit"]))
            continue
        if e["kind"] == "rtt":
            est.add_rtt(e["rtt_s"], e["t"])
        elif e["kind"] == "train":
            est.add_train(e["sizes"], e["edge_times"], e["t"])
        elif e["kind"] == "train_sent":
            est.train_sent(e["nbytes"], e["t"])
        elif e["kind"] == "feedback":
            est.add_feedback(e["nbytes"], e["publish_t"], e["t"], e["edge_residence_s"], e["edge_received_t"])
        out.append((e["t"], est.rate_bps, est.rate_known(e["t"])))
    return out, link


@pytest.mark.parametrize("path", sorted(TRACES.glob("*mbit.jsonl")), ids=lambda p: p.stem)
def test_recorded_traces_replay_to_the_links_true_rate(path):
    """Traces recorded on the netns + tc bed (bench/link_estimation.py --record-traces), one per
    mode and rate; the file name holds the true rate (`<mode>_<Mbit/s>mbit.jsonl`): replayed, the
    estimate after the first seconds is within 0.8-1.2 of it."""
    true_bps = float(path.stem.split("_")[-1].removesuffix("mbit")) * 1e6
    rates, _ = _replay(path)
    t0 = rates[0][0]
    r = np.array([rate for t, rate, _ in rates if t - t0 >= 3.0]) / true_bps
    assert r.size and 0.8 <= np.median(r) <= 1.2, (np.median(r), np.percentile(r, 10), np.percentile(r, 90))


def test_recorded_cuts_and_steps_replay_to_a_measured_rate_within_a_second():
    """The bench's recovery run (10 cuts of a 20 Mbit/s link, then steps 20 <-> 0.5 Mbit/s), the
    link's changes marked in the trace: after each restore and each step the replayed estimate is
    within 0.8-1.2 of the new rate (and known) within 1 s, and stays so until the next change."""
    rates, link = _replay(TRACES / "recovery_cuts_and_steps.jsonl")
    assert sum(1 for _, mbit in link if mbit == 0) >= 10
    changes = list(zip(link, link[1:] + [(float("inf"), None)]))
    checked = 0
    for (t, mbit), (t_next, _) in changes[1:]:
        if mbit == 0:
            continue
        after = [(s, rate / (mbit * 1e6)) for s, rate, known in rates if t <= s < t_next and known]
        settled = [s for s, ratio in after if 0.8 <= ratio <= 1.2]
        assert settled and settled[0] - t <= 1.0, (t, mbit, after[:5])
        late = [ratio for s, ratio in after if s >= settled[0] + 1.0]
        assert all(0.7 <= ratio <= 1.3 for ratio in late), (t, mbit, late)
        checked += 1
    assert checked >= 15
