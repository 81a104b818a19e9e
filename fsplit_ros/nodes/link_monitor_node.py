"""Link monitor node (robot): measures the real link and commands the encoder's mode.

  sub frame_feedback (FrameFeedback), link_probe_echo (LinkProbe), onboard_timing (OnboardTiming)
  pub link_probe (LinkProbe), link_state (LinkState: what the encoder follows), /diagnostics

Rate and RTT come from tiny probes (RTT), probe trains and backlogged payloads (rate, from the spacing
of their arrivals at the edge; trains capped at probe_max_fraction of the measured rate, paused while
payloads measure, sent at once when the link answers after an outage): policy/link_estimator.py,
policy/probing.py. Every update predicts
T = W + T_onboard + bytes/rate + RTT/2 + T_offboard per candidate from the profile (W: a frame's wait
for a robot still busy with the previous one) and picks one with
hysteresis and a minimum dwell time (fsplit_ros.policy). T_onboard and T_offboard are the profile's,
scaled by how much slower than profiled the encoder measures the robot now (onboard_timing) and
the edge reports itself (FrameFeedback.edge_time): MeasuredTimeCorrection.
"""
from __future__ import annotations

import json
import math
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from fsplit_ros.msg import FrameFeedback, LinkProbe, LinkState, OnboardTiming
from fsplit_ros.nodes.messages import PROBE_QOS, reception_time, time_to_float, wall_time_msg
from fsplit_ros.nodes.params import Param, declare_parameters
from fsplit_ros.modes import LOCAL, MODE_NAMES, OFFLOAD_MODES, candidate_mode, candidate_name
from fsplit_ros.nodes.runner import NodeSetupError, run_node
from fsplit_ros.payload.errors import ERROR_KIND_NAMES
from fsplit_ros.policy import (DEFAULT_MIN_FIDELITY, CostModel, LinkProfile, LinkEstimator, MeasuredTimeCorrection, ModeSelector,
                               LinkProber)

PARAMETERS = [
    Param("profile_file", "", "Per-mode costs from fsplit-profile; empty = profile this machine at "
          "start-up (cached in ~/.cache/fsplit_ros/profiles).", read_only=True),
    Param("backbone", "efficientnet_lite0", "Model to profile when profile_file is empty.", read_only=True),
    Param("weights", "", "Backbone checkpoint for start-up profiling.", read_only=True),
    Param("bottleneck_checkpoint", "default", "Bottleneck checkpoint for start-up profiling.", read_only=True),
    Param("models", [""], "The edge decoder's models (its `models`): start-up profiling counts every one's "
          "edge time for bottleneck payloads; [''] = backbone alone.", read_only=True),
    Param("decoder_dir", "", "The edge decoder's decoder_dir (for start-up profiling).", read_only=True),
    Param("allowed_modes", list(MODE_NAMES), "Modes that may be chosen."),
    Param("pinned_mode", "", "Force this mode; empty = choose adaptively.", choices=("",) + MODE_NAMES),
    Param("camera_rate", 10.0, "Camera frames per second (sustainability check).", low=0.1, high=240.0),
    Param("min_fidelity", DEFAULT_MIN_FIDELITY, "Never choose a mode whose recorded agreement with the unmodified model "
          "is below this: held-out top-1 agreement for classifiers, fidelity mAP@0.5 for detectors; the "
          "bottleneck's from its checkpoint, image and split modes' from the backbone's fidelity record "
          "(fsplit-eval --record). The default lies in the measured gap between near-lossless paths "
          "(split tensors >= 99.5 %, the Lite0 bottleneck 96.6-97.9 %, PNG 100 %) and lossy pixels (Lite0 "
          "JPEG q95 84-86 %), so noise in a held-out set cannot move a configuration across it. 0 = no floor.",
          low=0.0, high=1.0),
    Param("hysteresis", 0.15, "Switch only when the new mode is predicted this much faster.", low=0.0, high=0.9),
    Param("min_dwell_s", 2.0, "Keep a mode at least this long.", low=0.0, high=60.0),
    Param("link_timeout_s", 0.6, "No reply for this long = link down -> local.", low=0.05, high=60.0),
    Param("update_period_s", 0.1, "Decision period.", read_only=True, low=0.01, high=10.0),
    Param("rate_window_s", 1.0, "Throughput estimate window.", read_only=True, low=0.1, high=60.0),
    Param("rate_samples", 4, "The rate is estimated from at most this many newest samples in the window "
          "(fewer react faster to rate steps, more smooth noise).", read_only=True, low=1, high=1000),
    Param("probe_period_s", 0.2, "Probe period.", read_only=True, low=0.01, high=10.0),
    Param("emulated_slowdown", 1.0, "Onboard times of the profile are multiplied by this (the "
          "encoder's emulated_slowdown).", read_only=True, low=1.0, high=100.0),
    Param("probe_max_fraction", 0.05, "Probe trains' bytes <= this fraction of the measured rate (the train "
          "after an outage excepted).", low=0.0, high=0.5),
    Param("estimator_trace_file", "", "Append every input of the rate estimator (probe echoes, trains, payload "
          "feedback) to this JSON-lines file, for replay in tests (test/data/link_traces); empty = off.",
          read_only=True),
    Param("measured_time_correction", True, "Scale the profile's onboard and edge times by the ratio of "
          "the times measured now (the encoder's onboard_timing, the edge's FrameFeedback.edge_time) to them, "
          "so load on the robot's CPU or a busy edge is priced in: a candidate measured in the last 60 s by "
          "its own median ratio, the others by the median over all candidates of the last 10 s "
          "(policy/time_correction.py); false = trust the profile alone."),
]
MISMATCH_BACKOFF_S = 10.0       # edge has other weights: retry offloading after this long
REFUSED_BACKOFF_S = 30.0        # edge refuses a mode by configuration (e.g. allow_image_mode=false)
PROFILE_IDLE_WAIT_S = 10.0      # start-up profiling first waits up to this long for the nodes to load their models


class LinkMonitorNode(Node):
    def __init__(self):
        super().__init__("fsplit_link_monitor")
        self.p = declare_parameters(self, PARAMETERS)
        profile = self._load_profile()
        self._report_fidelity(profile)
        self.cost = CostModel(profile, self.p["camera_rate"], onboard_scale=self.p["emulated_slowdown"])
        self._trace = open(self.p["estimator_trace_file"], "a") if self.p["estimator_trace_file"] else None
        self.estimator = LinkEstimator(window_s=self.p["rate_window_s"], outage_s=self.p["link_timeout_s"],
                                       max_samples=self.p["rate_samples"], record=self._record)
        self.selector = ModeSelector(self.p["allowed_modes"], self.p["pinned_mode"], self.p["hysteresis"],
                                     self.p["min_dwell_s"], self.p["link_timeout_s"],
                                     min_fidelity=self.p["min_fidelity"])
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.state_pub = self.create_publisher(LinkState, "link_state", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.probe_pub = self.create_publisher(LinkProbe, "link_probe", PROBE_QOS)
        self.create_subscription(FrameFeedback, "frame_feedback", self.on_feedback, 50)
        self.create_subscription(LinkProbe, "link_probe_echo", self.on_echo, PROBE_QOS)
        self.create_subscription(OnboardTiming, "onboard_timing", self.on_timing, 20)
        self.onboard, self.offboard = MeasuredTimeCorrection(), MeasuredTimeCorrection()
        self.factors = {"robot": 1.0, "edge": 1.0}          # general factors at the last update (/diagnostics)
        self.logged_factors = {"robot": 1.0, "edge": 1.0}   # said in the log (changes of > 25 % are)
        self.probe_seq = 0
        self.prober = LinkProber(self.estimator, self.p["probe_max_fraction"], rtt_timeout_s=self.p["link_timeout_s"])
        self.rejections = 0
        self.rejections_by_kind: dict[str, int] = {}
        self.last_rejection = ""
        self.last_state: LinkState | None = None
        self.blocked: dict[str, tuple[float, str]] = {}   # mode -> (blocked until, why)
        self.create_timer(self.p["probe_period_s"], self.send_probe)
        self.create_timer(self.p["update_period_s"], self.update)
        self.create_timer(1.0, self.publish_diagnostics)
        self.get_logger().info(f"link monitor ready: candidates {sorted(self.cost.candidates)}")

    def _load_profile(self) -> LinkProfile:
        from fsplit_ros.profiling import cached_profile, load_profile
        from fsplit_ros.profiling.profiler import sample_frames
        if self.p["profile_file"]:
            profile = load_profile(self.p["profile_file"])
            wanted = sorted(m for m in self.p["models"] if m and m != profile.backbone)
            if sorted(profile.edge_models) != wanted:
                self.get_logger().warning(
                    f"profile_file times the edge with further models {profile.edge_models}, the edge runs "
                    f"{wanted}: its bottleneck edge times are off; profile the edge with fsplit-profile "
                    f"--models")
            return profile
        self.get_logger().warning("no profile_file: profiling robot and edge costs on THIS machine "
                                  "(run fsplit-profile on each side for a real deployment)")
        from fsplit_ros.runtime import Deployment
        dep = Deployment.load(self.p["backbone"], self.p["weights"] or None,
                              self.p["bottleneck_checkpoint"] or None)
        from fsplit_ros.bottleneck.shared import SharedDecoderMismatch
        from fsplit_ros.runtime.shared_models import load_shared_models
        try:
            shared = load_shared_models(self.p["models"], dep, self.p["decoder_dir"] or None)
        except SharedDecoderMismatch as exc:
            raise NodeSetupError(f"cannot profile the edge's models: {exc}") from None
        profile = cached_profile(dep, sample_frames(), idle_wait_s=PROFILE_IDLE_WAIT_S, shared_models=shared)
        load = profile.timing.other_cpu_load
        if profile.timing.cached is False:
            self.get_logger().warning(
                f"other processes used {'an unknown share' if load is None else f'{load:.0%}'} of the CPUs "
                f"while the profile was timed (nodes still loading?): its costs may be inflated, so it is "
                f"used for this run only and measured again at the next start; for stable decisions run "
                f"fsplit-profile on an idle machine and pass it as profile_file")
        return profile

    def _report_fidelity(self, profile: LinkProfile) -> None:
        """Say at start-up which candidates the floor keeps out and whose accuracy loss is unknown
        (attach_fidelity is idempotent: the loaded profile already carries the record's numbers,
        this call returns the candidates it has none for)."""
        from fsplit_ros.profiling.fidelity import attach_fidelity, load_record
        unknown = attach_fidelity(profile, load_record(profile.backbone))
        floor = self.p["min_fidelity"]
        below = {name: c.fidelity for name, c in profile.candidates.items()
                 if c.fidelity is not None and c.fidelity < floor}
        if below:
            self.get_logger().info(
                f"min_fidelity {floor:g} keeps out " + ", ".join(f"{n} ({f:.1%})" for n, f in sorted(below.items()))
                + ": lower min_fidelity to allow them, or send lossless pixels (encoder image_codec png)")
        if unknown and floor > 0:
            self.get_logger().warning(
                f"no fidelity record for {', '.join(sorted(unknown))} of '{profile.backbone}' with these "
                f"weights and codecs: their accuracy loss is unknown and min_fidelity cannot keep them out; "
                f"measure it with fsplit-eval --record")

    def _on_set_parameters(self, params):
        from rcl_interfaces.msg import SetParametersResult
        for param in params:
            self.p[param.name] = param.value
        s = self.selector
        s.allowed_modes = set(self.p["allowed_modes"]) | {LOCAL}
        s.pinned_mode, s.hysteresis = self.p["pinned_mode"], self.p["hysteresis"]
        s.min_dwell_s, s.link_timeout_s = self.p["min_dwell_s"], self.p["link_timeout_s"]
        s.min_fidelity = self.p["min_fidelity"]
        self.cost.camera_rate = self.p["camera_rate"]
        return SetParametersResult(successful=True)

    def on_feedback(self, fb: FrameFeedback, info: dict):
        now = reception_time(info)
        if not fb.ok:
            self.rejections += 1
            error = fb.error[:300]               # the edge's text, for people: never log an unbounded string
            kind = ERROR_KIND_NAMES.get(fb.error_kind, "other")   # an edge of a newer version: counted
            self.rejections_by_kind[kind] = self.rejections_by_kind.get(kind, 0) + 1
            self.last_rejection = error
            self.estimator.add_rtt(0.0, now)   # the edge answered: the link is up
            if kind == "model_mismatch":
                # The edge has other weights: offloading cannot work until someone redeploys.
                for mode in OFFLOAD_MODES:
                    self.blocked[mode] = (now + MISMATCH_BACKOFF_S, f"edge rejects our payloads: {error}")
                self.get_logger().error(f"edge rejects our payloads, falling back to local: {error}",
                                        throttle_duration_sec=5.0)
            elif kind == "refused" and fb.mode in OFFLOAD_MODES:
                self.blocked[fb.mode] = (now + REFUSED_BACKOFF_S, f"edge refuses it: {error}")
                self.get_logger().error(f"edge refuses {fb.mode} mode: {error}", throttle_duration_sec=5.0)
            return
        if time_to_float(fb.sent_stamp) > now:
            return   # not a payload this robot sent (its publish time is in our future)
        received = time_to_float(fb.received_stamp)
        self.estimator.add_feedback(fb.bytes, time_to_float(fb.sent_stamp), now,
                                    time_to_float(fb.finished_stamp) - received, received)
        if fb.mode and fb.batch_size > 0:
            name = candidate_name(fb.mode, fb.split_index)
            profiled = self.cost.profiled_offboard_s(name, fb.batch_size)
            if profiled is not None:     # a candidate the profile lacks: on_timing says so for the robot
                self.offboard.add(name, fb.edge_time / fb.batch_size, profiled, now)

    def on_timing(self, timing: OnboardTiming):
        profiled = self.cost.profiled_onboard_s(timing.candidate)
        if profiled is None:
            self.get_logger().warning(f"onboard_timing for '{timing.candidate[:40]}', which the profile does not "
                                      f"have: ignored (encoder and link monitor configured for different models "
                                      f"or split points?)", throttle_duration_sec=10.0)
            return
        self.onboard.add(timing.candidate, timing.compute_time, profiled, time.time())

    def send_probe(self):
        """A tiny probe every period, then a probe train when one is due (policy/probing.py)."""
        now = time.time()
        self.prober.max_fraction = self.p["probe_max_fraction"]
        seqs = []
        for padding in self.prober.due(self.p["probe_period_s"], now):
            self.probe_seq += 1
            seqs.append(self.probe_seq)
            self.probe_pub.publish(LinkProbe(seq=self.probe_seq, sent_stamp=wall_time_msg(now),
                                             padding=bytes(padding)))
        self.prober.sent(seqs, now)

    def on_echo(self, probe: LinkProbe, info: dict):
        self.prober.echoed(probe.seq, time_to_float(probe.received_stamp), reception_time(info))
        if self.prober.train_wanted():   # the link is back, or faster than the last train could show
            self.send_probe()

    def _record(self, event: dict):
        if self._trace is not None:
            self._trace.write(json.dumps(event) + "\n")
            self._trace.flush()

    def update(self):
        now = time.time()
        rate, rtt = self.estimator.rate_bps, self.estimator.rtt_s
        onboard, offboard = self._measured_factors(now)
        predictions = self.cost.predict(rate, rtt, onboard_factors=onboard, offboard_factors=offboard)
        blocked = self.blocked_modes(now)
        previous = candidate_mode(self.selector.current)[0]
        decision = self.selector.update(predictions, self.estimator.since_last_reply(now), now, blocked,
                                        link_measured=self.estimator.rate_known(now))
        reason = decision.reason
        if decision.changed and previous in blocked:
            reason = f"{reason}: {self.blocked[previous][1]}"   # say what the edge answered
        if decision.changed:
            self.get_logger().info(f"mode -> {decision.candidate}: {reason} "
                                   f"(rate {rate / 1e6:.2f} Mbit/s, RTT {rtt * 1e3:.0f} ms)")
        mode, split = candidate_mode(decision.candidate)
        names = sorted(predictions)
        state = LinkState(rate_bps=rate, rtt=rtt, since_last_reply=min(self.estimator.since_last_reply(now), 1e9),
                          mode=mode, split_index=split,
                          reason=reason if decision.changed else self.selector_reason(),
                          candidate_modes=names, predicted_latency=[predictions[n].latency_s for n in names],
                          sustainable=[predictions[n].sustainable for n in names],
                          fidelity=[1.0 if n == LOCAL else math.nan if predictions[n].fidelity is None
                                    else predictions[n].fidelity for n in names])
        state.header.stamp = self.get_clock().now().to_msg()
        self.state_pub.publish(state)
        self.last_state = state

    def _measured_factors(self, now: float):
        """Per-candidate onboard and edge factors (None: the profile alone); logs changes of the
        general ones."""
        if not self.p["measured_time_correction"]:
            self.factors = {"robot": 1.0, "edge": 1.0}
            return None, None
        for side, correction in (("robot", self.onboard), ("edge", self.offboard)):
            factor = self.factors[side] = correction.general_factor(now)
            if abs(factor - self.logged_factors[side]) > 0.25 * self.logged_factors[side]:
                self.get_logger().info(f"{side} computes {factor:.2f}x the profile's times now (measured "
                                       f"on the last {correction.recent_samples(now)} frames)")
                self.logged_factors[side] = factor
        names = self.cost.candidates
        return self.onboard.factors(names, now), self.offboard.factors(names, now)

    def selector_reason(self) -> str:
        return f"keep {self.selector.current}"

    def blocked_modes(self, now: float) -> frozenset:
        """Offload modes the edge currently rejects (model mismatch, refused by configuration)."""
        return frozenset(mode for mode, (until, _) in self.blocked.items() if now < until)

    def publish_diagnostics(self):
        s = self.last_state
        if s is None:
            return
        down = s.since_last_reply > self.p["link_timeout_s"]
        blocked = sorted(self.blocked_modes(time.time()))
        if down:
            level, message = DiagnosticStatus.WARN, "link down, running local"
        elif blocked:
            # the link works but the edge rejects what we send: someone has to redeploy/reconfigure
            why = self.blocked[blocked[0]][1]
            level, message = DiagnosticStatus.ERROR, f"edge rejects {'/'.join(blocked)}, running {s.mode}: {why}"
        else:
            level, message = DiagnosticStatus.OK, f"mode {s.mode}"
        status = DiagnosticStatus(level=level, name=f"{self.get_fully_qualified_name()}: link",
                                  message=message[:400], hardware_id="fsplit_link")
        by_kind = ", ".join(f"{k}={n}" for k, n in sorted(self.rejections_by_kind.items()))
        status.values = [KeyValue(key="rate_mbps", value=f"{s.rate_bps / 1e6:.3f}"),
                         KeyValue(key="rtt_ms", value=f"{s.rtt * 1e3:.1f}"),
                         KeyValue(key="probe_trains", value=f"{self.prober.trains_sent} sent, "
                                                            f"{self.prober.trains_lost} lost"),
                         KeyValue(key="mode", value=s.mode), KeyValue(key="split_index", value=str(s.split_index)),
                         KeyValue(key="onboard_factor", value=f"{self.factors['robot']:.2f}"),
                         KeyValue(key="edge_factor", value=f"{self.factors['edge']:.2f}"),
                         KeyValue(key="edge_rejections", value=str(self.rejections)),
                         KeyValue(key="edge_rejections_by_kind", value=by_kind),
                         KeyValue(key="last_edge_error", value=self.last_rejection),
                         KeyValue(key="blocked_modes", value=",".join(blocked))]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array)


def main(args=None):
    return run_node(LinkMonitorNode, args)
