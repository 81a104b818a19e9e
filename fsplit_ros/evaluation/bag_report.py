"""Evaluate a rosbag2 recording (sqlite3 or MCAP) of an fsplit run, without ROS.

Reads the bag with `rosbags` and the fsplit typestore (fsplit_ros + vision_msgs from their .msg
files; the bag's own embedded definition is used for a type whose definition hash differs), finds
the fsplit topics by MESSAGE TYPE, not by name (so remapped and namespaced topics work), and groups
them by topic namespace: one group per robot (`/robot1/compressed_feature`, `/robot1/classification`,
... -> robot `/robot1`). Camera topics (sensor_msgs/Image) belong to the robot whose namespace is
their longest prefix (`/robot1/camera/image_raw` -> `/robot1`); where a robot has several, the one
whose header stamps match the results is used.

Per robot it reports
  * payloads (CompressedFeature): bytes per frame by mode (and split point), bitrate over time by
    mode, seq gaps (payloads the recorder never saw) and restarts;
  * end-to-end latency per result (vision_msgs/Classification): receipt time - camera stamp, by
    the mode its frame was sent in (the CompressedFeature with the same header stamp, or `local`
    where no payload has that stamp: the robot ran the whole model);
  * delivered frame rate and drops: camera frames vs results, and where each frame without a
    result was lost (never sent / no FrameFeedback from the edge / rejected by the edge, counted by
    error kind = text before ':' / decoded but the result never arrived);
  * the mode timeline commanded by the link monitor (LinkState: mode, split_index, reason) with its
    measured rate (rate_bps);
  * where the camera frames were recorded: the agreement (top-1 class_id) of the received results
    with the full local model run offline on the same frames, matched by header stamp.

Clocks. Receipt times are the bag's receive timestamps: the recorder's clock when each message
arrived. The camera stamp (header.stamp) is set by the camera driver and copied unchanged into the
CompressedFeature, the FrameFeedback and the Classification. The recorder runs on the robot
(recorder_node in robot.launch.py, or `ros2 bag record` there), so both are the ROBOT's clock and
`latency = receipt time of the result - camera stamp` needs no clock synchronisation; it includes
camera transport, onboard encode, uplink, edge decode + tail, and the downlink of the result.
That does not hold when the bag was recorded on the edge or another machine (latencies are then
offset by the clock difference), with use_sim_time, or with a camera that stamps frames with its
own hardware clock. Where frames are recorded the report checks the camera -> recorder delay
(receipt time of a frame - its stamp; a few ms when the clocks agree) and warns when it is
negative or over a second; it also warns about negative latencies. The edge's stamps in
FrameFeedback (received/finished) are the edge clock and are not mixed with the robot's: only
their difference (edge_time) is used.

Rates: a rate over n events is (n - 1) / (last - first) on the receipt times. Bitrate series:
payload bytes * 8 per bin of `bin_s` seconds from the first message of the robot's topics (the last
bin may be partial and is still divided by `bin_s`); a mode's bitrate "while active" is its bits
divided by the total length of the bins in which it sent anything.

The `fsplit-eval-bag` command (fsplit_ros/cli/eval_bag.py) prints the summary table and writes
report.json and the PNG plots; `evaluate_bag()` is the same as a function.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from fsplit_ros.modes import mode_order
from fsplit_ros.payload.errors import ERROR_KIND_NAMES

MSG_FEATURE = "fsplit_ros/msg/CompressedFeature"
MSG_FEEDBACK = "fsplit_ros/msg/FrameFeedback"
MSG_LINK_STATE = "fsplit_ros/msg/LinkState"
MSG_RESULT = "vision_msgs/msg/Classification"
MSG_IMAGE = "sensor_msgs/msg/Image"
# Message type -> role; the canonical (unremapped) topic base name is the role itself.
ROLES = {MSG_FEATURE: "compressed_feature", MSG_RESULT: "classification", MSG_FEEDBACK: "frame_feedback",
         MSG_LINK_STATE: "link_state"}
MODE_COLORS = {"local": "tab:green", "split": "tab:blue", "bottleneck": "tab:purple", "image": "tab:red"}
CLOCK_NOTE = ("latency = bag receive time of the result (recorder clock) - camera header stamp; the "
              "recorder runs on the robot, so both are the robot's clock (not so if the bag was recorded "
              "on another machine, with sim time, or the camera stamps with its own clock)")
CLOCK_DELAY_LIMIT_MS = 1000.0
NS = 1_000_000_000


class BagReportError(RuntimeError):
    """The bag cannot be evaluated; the message says why and what it holds."""


# --- Records read from the bag (plain Python, no message objects kept) ----------------------------

@dataclass
class Payload:
    t: int            # bag receive time, ns
    stamp: int        # camera header stamp, ns
    seq: int
    mode: str
    split_index: int
    nbytes: int
    model_name: str
    encode_time: float


@dataclass
class Result:
    t: int
    stamp: int
    class_id: str     # top-1 (highest score); '' for an empty result
    score: float


def rejection_kind(number: int, error: str) -> str:
    """FrameFeedback's typed error kind by name; in bags recorded before the field existed (0 on a
    rejection), the first word of the edge's explanation, as it was written then."""
    if number:
        return ERROR_KIND_NAMES.get(number, "other")
    return error.split(":", 1)[0].strip() or "unknown"


@dataclass
class Feedback:
    t: int
    stamp: int
    seq: int
    nbytes: int
    ok: bool
    error: str
    edge_time: float
    batch_size: int
    error_kind: str = "none"   # FrameFeedback.error_kind's name (rejection_kind)


@dataclass
class State:
    t: int
    rate_bps: float
    rtt: float
    mode: str
    split_index: int
    reason: str


@dataclass
class Frame:
    t: int
    stamp: int
    local_class: str | None = None   # top-1 of the local model, where agreement was computed


@dataclass
class RobotData:
    namespace: str
    topics: dict[str, str] = field(default_factory=dict)         # role -> topic used
    payloads: list[Payload] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    feedback: list[Feedback] = field(default_factory=list)
    states: list[State] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unconvertible_frames: int = 0
    agreement_skipped: str | None = None


@dataclass
class BagData:
    path: str
    storage: str
    message_count: int
    robots: dict[str, RobotData]
    other_topics: dict[str, str]     # topic -> type, not used


# --- Reading --------------------------------------------------------------------------------------

def stamp_ns(stamp) -> int:
    return int(stamp.sec) * NS + int(stamp.nanosec)


def topic_namespace(topic: str) -> str:
    """'/robot1/compressed_feature' -> '/robot1'; '/compressed_feature' -> '/'."""
    parent = topic.rstrip("/").rsplit("/", 1)[0]
    return parent or "/"


def image_owner(topic: str, namespaces: Iterable[str]) -> str | None:
    """The robot namespace a camera topic belongs to: the longest namespace that prefixes it."""
    best = None
    for ns in namespaces:
        if ns == "/" or topic.startswith(ns.rstrip("/") + "/"):
            if best is None or len(ns) > len(best):
                best = ns
    return best


def resolve_bag_path(path: str | Path) -> Path:
    """The rosbag2 folder: `path` itself, or the folder of a .mcap/.db3 file inside one."""
    path = Path(path).expanduser()
    if not path.exists():
        raise BagReportError(f"{path} does not exist")
    if path.is_file() and (path.parent / "metadata.yaml").is_file():
        path = path.parent
    if not path.is_dir() or not (path / "metadata.yaml").is_file():
        raise BagReportError(f"{path} is not a rosbag2 folder (no metadata.yaml). A bag whose recorder was "
                             f"killed without closing it has none: run `ros2 bag reindex {path}`, and stop "
                             f"recorders with Ctrl-C/SIGINT")
    return path


class _Deserializers:
    """Deserialize with the fsplit typestore; fall back to the bag's embedded definition of a type
    that store lacks or defines differently (definition hash mismatch)."""

    def __init__(self, connections):
        from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore
        self.notes: list[str] = []
        try:
            from fsplit_ros.evaluation.bag_types import fsplit_typestore
            self.store = fsplit_typestore()
        except FileNotFoundError as exc:
            self.store = get_typestore(Stores.LATEST)
            self.notes.append(f"fsplit typestore unavailable ({exc}); using the bag's own type definitions")
        self._by_type: dict[str, object] = {}
        for conn in connections:
            if conn.msgtype in self._by_type:
                continue
            known = conn.msgtype in self.store.fielddefs
            same = known and (not conn.digest or conn.digest == self.store.hash_rihs01(conn.msgtype))
            if same:
                self._by_type[conn.msgtype] = self.store
                continue
            if conn.msgdef.data:
                alt = get_typestore(Stores.EMPTY)
                if conn.msgdef.format.name == "MSG":
                    alt.register(get_types_from_msg(conn.msgdef.data, conn.msgtype))
                else:
                    sep = "=" * 80 + "\n"
                    types = {}
                    if conn.msgdef.data.startswith(f"{sep}IDL: "):
                        for block in conn.msgdef.data.split(sep)[1:]:
                            types.update(get_types_from_idl(block.split("\n", 1)[1]))
                    else:
                        types.update(get_types_from_idl(conn.msgdef.data))
                    alt.register(types)
                self._by_type[conn.msgtype] = alt
                if known:
                    self.notes.append(f"{conn.msgtype}: the bag's definition differs from this package's "
                                      f"(hash {conn.digest}); read with the bag's own definition")
            elif known:   # no embedded definition to prefer: trust ours, CDR decoding checks sizes
                self._by_type[conn.msgtype] = self.store
                self.notes.append(f"{conn.msgtype}: definition hash {conn.digest} differs from this "
                                  f"package's and the bag embeds no definition; read with this package's")

    def __call__(self, raw: bytes, msgtype: str):
        store = self._by_type.get(msgtype)
        if store is None:
            raise BagReportError(f"no definition of {msgtype}: neither this package nor the bag has one")
        try:
            return store.deserialize_cdr(raw, msgtype)
        except Exception as exc:  # rosbags raises several types for malformed or mismatched CDR
            raise BagReportError(f"cannot decode a {msgtype} message ({len(raw)} bytes) with the definition "
                                 f"at hand: {exc!r}") from exc


def _top1(msg) -> tuple[str, float]:
    if not len(msg.results):
        return "", 0.0
    best = max(msg.results, key=lambda h: h.score)
    return str(best.class_id), float(best.score)


def _record(role: str, t: int, msg, topic: str = ""):
    """The record of one message. Fields the evaluation cannot do without are required; the rest
    (timings, model name) may be missing from a bag recorded with an older message definition."""
    opt = lambda name, default=math.nan: getattr(msg, name, default)  # noqa: E731
    try:
        if role == "compressed_feature":
            return Payload(t, stamp_ns(msg.header.stamp), int(msg.seq), str(msg.mode), int(msg.split_index),
                           len(msg.data), str(opt("model_name", "")), float(opt("encode_time")))
        if role == "classification":
            return Result(t, stamp_ns(msg.header.stamp), *_top1(msg))
        if role == "frame_feedback":
            return Feedback(t, stamp_ns(msg.header.stamp), int(msg.seq), int(msg.bytes), bool(msg.ok),
                            str(msg.error), float(opt("edge_time")), int(opt("batch_size", 0)),
                            rejection_kind(int(opt("error_kind", 0)), str(msg.error)))
        return State(t, float(msg.rate_bps), float(opt("rtt")), str(msg.mode), int(msg.split_index),
                     str(opt("reason", "")))
    except AttributeError as exc:
        raise BagReportError(f"{topic} ({type(msg).__name__}) was recorded with a message definition that "
                             f"lacks a field the evaluation needs: {exc}") from None


def _nanmean(values) -> float | None:
    a = np.asarray(list(values), dtype=float)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else None


_LISTS = {"compressed_feature": "payloads", "classification": "results", "frame_feedback": "feedback",
          "link_state": "states"}


def read_bag(path: str | Path, classify: Callable | None = None) -> BagData:
    """Read the fsplit topics of a rosbag2 folder into per-robot records.

    classify(image_msg) -> class_id (str): run on every recorded camera frame whose stamp has a
    result, for the agreement; None = no agreement. It may raise fsplit_ros.imaging.ImageEncodingError
    for a frame it cannot convert: that frame is counted as unconvertible.
    """
    from rosbags.rosbag2 import Reader, ReaderError

    folder = resolve_bag_path(path)
    storage = "mcap" if any(folder.glob("*.mcap")) else "sqlite3" if any(folder.glob("*.db3")) else "unknown"
    try:
        reader = Reader(folder)
        reader.open()
    except ReaderError as exc:
        raise BagReportError(f"cannot open {folder} as a rosbag2 bag: {exc}") from None
    try:
        conns = reader.connections
        types_found = {c.topic: c.msgtype for c in conns}
        role_conns = [c for c in conns if c.msgtype in ROLES]
        if not role_conns:
            listed = ", ".join(f"{t} ({m})" for t, m in sorted(types_found.items())) or "no topics at all"
            raise BagReportError(
                f"{folder} holds no fsplit topics: none of the types {', '.join(sorted(ROLES))} was "
                f"recorded. It has: {listed}")
        deser = _Deserializers(conns)

        # One robot per namespace; per role, one topic (the canonical name, else the busiest).
        robots: dict[str, RobotData] = {}
        chosen = {}
        by_ns_role = defaultdict(list)
        for c in role_conns:
            by_ns_role[(topic_namespace(c.topic), ROLES[c.msgtype])].append(c)
        for (ns, role), candidates in sorted(by_ns_role.items()):
            counts = Counter()
            for c in candidates:
                counts[c.topic] += c.msgcount
            topics = sorted(counts, key=lambda t: (t.rsplit("/", 1)[-1] != role, -counts[t], t))
            robot = robots.setdefault(ns, RobotData(ns))
            robot.topics[role] = topics[0]
            if len(topics) > 1:
                robot.notes.append(f"several {role} topics in {ns}: used {topics[0]}, ignored {topics[1:]}")
            for c in candidates:
                if c.topic == topics[0]:
                    chosen[c.id] = (ns, role)

        image_conns = defaultdict(list)
        other = {}
        for c in conns:
            if c.msgtype == MSG_IMAGE:
                owner = image_owner(c.topic, robots)
                if owner is None:
                    other[c.topic] = c.msgtype
                else:
                    image_conns[owner].append(c)
            elif c.id not in chosen:
                other[c.topic] = c.msgtype

        for conn, t, raw in reader.messages(connections=[c for c in conns if c.id in chosen]):
            ns, role = chosen[conn.id]
            getattr(robots[ns], _LISTS[role]).append(_record(role, t, deser(raw, conn.msgtype), conn.topic))

        # Camera frames: stamps of every candidate topic, then pick the one matching the results.
        frames_by_topic: dict[str, list[Frame]] = defaultdict(list)
        image_ids = {c.id for cs in image_conns.values() for c in cs}
        if image_ids:
            for conn, t, raw in reader.messages(connections=[c for c in conns if c.id in image_ids]):
                frames_by_topic[conn.topic].append(Frame(t, stamp_ns(deser(raw, conn.msgtype).header.stamp)))
        to_classify = {}
        for ns, cands in image_conns.items():
            robot = robots[ns]
            wanted = {r.stamp for r in robot.results} | {p.stamp for p in robot.payloads}
            ranked = sorted((c.topic for c in cands), key=lambda tp: (
                -len({f.stamp for f in frames_by_topic[tp]} & wanted), tp.rsplit("/", 1)[-1] != "image_raw",
                -len(frames_by_topic[tp]), tp))
            robot.topics["image"] = ranked[0]
            robot.frames = frames_by_topic[ranked[0]]
            if len(ranked) > 1:
                robot.notes.append(f"several camera topics under {ns}: used {ranked[0]} (stamps match the "
                                   f"results), ignored {ranked[1:]}")
                for tp in ranked[1:]:
                    other[tp] = MSG_IMAGE
            result_stamps = {r.stamp for r in robot.results}
            if classify is not None:
                to_classify[ranked[0]] = (robot, {f.stamp: f for f in robot.frames if f.stamp in result_stamps})

        if classify is not None and any(todo for _, todo in to_classify.values()):
            from fsplit_ros.imaging import ImageEncodingError
            ids = [c.id for c in conns if c.topic in to_classify]
            for conn, _, raw in reader.messages(connections=[c for c in conns if c.id in ids]):
                robot, todo = to_classify[conn.topic]
                msg = deser(raw, conn.msgtype)
                frame = todo.get(stamp_ns(msg.header.stamp))
                if frame is None or frame.local_class is not None:
                    continue
                try:
                    frame.local_class = str(classify(msg))
                except ImageEncodingError as exc:   # not a frame the model can take
                    robot.unconvertible_frames += 1
                    if robot.unconvertible_frames == 1:
                        robot.notes.append(f"camera frame not convertible for the local model: {exc}")
        for robot in robots.values():
            robot.notes[:0] = deser.notes
            for name in ("payloads", "results", "feedback", "states", "frames"):
                getattr(robot, name).sort(key=lambda r: r.t)
        return BagData(str(folder), storage, reader.message_count, robots, other)
    finally:
        reader.close()


class LocalModelClassifier:
    """classify(image_msg) -> top-1 class id (str) of the full local model, loaded on first use:
    the same preprocessing and model as the encoder node's local mode. `encoder`: an already loaded
    fsplit_ros.runtime.OnboardEncoder of that backbone to reuse."""

    def __init__(self, backbone: str = "efficientnet_lite0", encoder=None):
        if encoder is not None and encoder.dep.name != backbone:
            raise ValueError(f"the encoder given runs {encoder.dep.name}, not {backbone}")
        self.backbone = backbone
        self._encoder = encoder

    def __call__(self, msg) -> str:
        from fsplit_ros.imaging import to_rgb8
        if self._encoder is None:
            from fsplit_ros.runtime import Deployment, OnboardEncoder
            try:
                self._encoder = OnboardEncoder(Deployment.load(self.backbone, bottleneck=None))
            except (ValueError, FileNotFoundError) as exc:
                raise BagReportError(f"cannot load the local model '{self.backbone}' for the agreement: {exc}. "
                                     f"Pass the robot's --backbone, or --no-agreement") from exc
        rgb = to_rgb8(msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian))
        enc = self._encoder
        return str(int(enc.predict_local(enc.prepare(rgb)).argmax()))


# --- Analysis -------------------------------------------------------------------------------------

def _rate(times_ns: list[int]) -> float | None:
    if len(times_ns) < 2 or times_ns[-1] == times_ns[0]:
        return None
    return (len(times_ns) - 1) / ((times_ns[-1] - times_ns[0]) / NS)


def _stats(values: list[float]) -> dict:
    a = np.asarray(values, dtype=float)
    if not a.size:
        return {"count": 0}
    return {"count": int(a.size), "mean": float(a.mean()), "min": float(a.min()),
            "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p95": float(np.percentile(a, 95)), "p99": float(np.percentile(a, 99)), "max": float(a.max())}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def _seq_breaks(seqs: list[int]) -> tuple[int, int]:
    """(missing seqs between consecutive messages, times seq did not increase: restarts/duplicates)."""
    gaps = restarts = 0
    for a, b in zip(seqs, seqs[1:]):
        if b > a:
            gaps += b - a - 1
        else:
            restarts += 1
    return gaps, restarts


def _ordered(modes: Iterable[str]) -> list[str]:
    return sorted(set(modes), key=mode_order)


def payload_for(result: Result, by_stamp: dict[int, list[Payload]]) -> Payload | None:
    """The payload a result's frame was sent in: same header stamp, the last one sent before the
    result arrived (stamps are unique per frame; a camera that repeats stamps is disambiguated by
    time)."""
    cands = by_stamp.get(result.stamp)
    if not cands:
        return None
    before = [p for p in cands if p.t <= result.t]
    return before[-1] if before else cands[0]


def analyse_robot(robot: RobotData, bin_s: float = 1.0, agreement_backbone: str | None = None) -> dict:
    times = [r.t for name in ("payloads", "results", "feedback", "states", "frames") for r in getattr(robot, name)]
    start, end = (min(times), max(times)) if times else (0, 0)
    rel = lambda t: (t - start) / NS  # noqa: E731
    warnings: list[str] = []
    notes = list(robot.notes)
    clock_consistent = True

    # Payloads: bytes per frame and bitrate by mode.
    pays = robot.payloads
    by_stamp: dict[int, list[Payload]] = defaultdict(list)
    for p in pays:
        by_stamp[p.stamp].append(p)
    bin_ns = int(round(bin_s * NS))
    nbins = (end - start) // bin_ns + 1 if times else 0
    bits = {m: [0.0] * nbins for m in _ordered(p.mode for p in pays)}
    for p in pays:
        bits[p.mode][(p.t - start) // bin_ns] += p.nbytes * 8
    by_mode = {}
    for mode in _ordered(p.mode for p in pays):
        sizes = [p.nbytes for p in pays if p.mode == mode]
        active = sum(1 for b in bits[mode] if b > 0)
        by_mode[mode] = {
            "frames": len(sizes), "bytes_mean": float(np.mean(sizes)), "bytes_median": float(np.median(sizes)),
            "bytes_min": int(min(sizes)), "bytes_max": int(max(sizes)), "bytes_total": int(sum(sizes)),
            "bitrate_bps_while_active": sum(bits[mode]) / (active * bin_s),
            "split_indices": {str(k): v for k, v in sorted(Counter(p.split_index for p in pays
                                                                   if p.mode == mode).items())}}
    by_payload = {}
    for key in sorted({(p.mode, p.split_index) for p in pays},
                      key=lambda k: (mode_order(k[0]), k)):
        sizes = [p.nbytes for p in pays if (p.mode, p.split_index) == key]
        by_payload[f"{key[0]}@{key[1]}"] = {"mode": key[0], "split_index": key[1], "frames": len(sizes),
                                            "bytes_mean": float(np.mean(sizes)), "bytes_min": int(min(sizes)),
                                            "bytes_max": int(max(sizes))}
    gaps, restarts = _seq_breaks([p.seq for p in pays])
    duration_s = (end - start) / NS
    total_bytes = sum(p.nbytes for p in pays)
    models = sorted({p.model_name for p in pays if p.model_name})
    payload_report = {
        "count": len(pays), "bytes_total": total_bytes,
        "mean_bitrate_bps": total_bytes * 8 / duration_s if duration_s > 0 else None,
        "seq_gaps": gaps, "seq_restarts": restarts, "models": models,
        "by_mode": by_mode, "by_mode_and_split": by_payload,
        "encode_time_ms_mean": _ms(_nanmean(p.encode_time for p in pays)),
    }

    # Results: latency and the mode each frame was sent in.
    per_result = []
    for r in robot.results:
        p = payload_for(r, by_stamp)
        per_result.append({"t_s": rel(r.t), "stamp_ns": r.stamp, "mode": p.mode if p else "local",
                           "split_index": p.split_index if p else None,
                           "latency_ms": (r.t - r.stamp) / 1e6, "class_id": r.class_id})
    lat_modes = _ordered(x["mode"] for x in per_result)
    latency = {"all": _stats([x["latency_ms"] for x in per_result]),
               "by_mode": {m: _stats([x["latency_ms"] for x in per_result if x["mode"] == m]) for m in lat_modes}}
    negative = sum(1 for x in per_result if x["latency_ms"] < 0)
    if negative:
        clock_consistent = False
        warnings.append(f"{negative} result(s) arrived before their camera stamp: the camera and the "
                        f"recorder do not share a clock, latencies are offset")

    # Frames, results and where the missing ones were lost.
    fb_by_stamp: dict[int, list[Feedback]] = defaultdict(list)
    for f in robot.feedback:
        fb_by_stamp[f.stamp].append(f)
    result_stamps = {r.stamp for r in robot.results}
    payload_stamps = set(by_stamp)
    frames = robot.frames
    frame_stamps = {f.stamp for f in frames}
    delivery = {
        "camera_frames": len(frames) if "image" in robot.topics else None,
        "camera_fps": _rate([f.t for f in frames]),
        "results": len(robot.results), "frames_with_result": len(result_stamps),
        "duplicate_results": len(robot.results) - len(result_stamps),
        "delivered_fps": _rate([r.t for r in robot.results]),
        "payloads_without_result": len(payload_stamps - result_stamps),
    }
    has_feedback = "frame_feedback" in robot.topics
    if "image" in robot.topics:
        missing = frame_stamps - result_stamps
        lost = Counter()
        for s in missing:
            fbs = fb_by_stamp.get(s, [])
            if s not in payload_stamps:
                lost["not_sent"] += 1
            elif not has_feedback:
                lost["sent_without_result"] += 1
            elif not fbs:
                lost["no_feedback"] += 1
            elif not any(f.ok for f in fbs):
                lost["rejected"] += 1
            else:
                lost["result_lost"] += 1
        kinds = ("not_sent", "no_feedback", "rejected", "result_lost") if has_feedback else (
            "not_sent", "sent_without_result")
        delivery.update({
            "frames_with_result": len(frame_stamps & result_stamps),
            "frames_without_result": len(missing),
            "delivery_ratio": len(frame_stamps & result_stamps) / len(frame_stamps) if frame_stamps else None,
            "lost": {k: lost.get(k, 0) for k in kinds},
            "results_without_frame": len(result_stamps - frame_stamps),
        })
        if result_stamps - frame_stamps:
            notes.append(f"{len(result_stamps - frame_stamps)} result(s) are for camera frames the recorder "
                         f"did not record (camera topics are best-effort): frame counts and the delivery "
                         f"ratio cover the recorded frames only")
    else:
        notes.append("camera frames were not recorded: frames dropped on the robot before encoding "
                           "cannot be counted, and there is no agreement")

    # FrameFeedback: the edge's view.
    errors = Counter(f.error_kind for f in robot.feedback if not f.ok)
    fb_gaps, fb_restarts = _seq_breaks([f.seq for f in robot.feedback])
    edge_ok = [f for f in robot.feedback if f.ok]
    feedback = {
        "count": len(robot.feedback), "ok": len(edge_ok), "rejected": len(robot.feedback) - len(edge_ok),
        "rejected_by_kind": dict(sorted(errors.items())),
        "payloads_without_feedback": len(payload_stamps - set(fb_by_stamp)) if has_feedback else None,
        "seq_gaps": fb_gaps, "seq_restarts": fb_restarts,
        "edge_time_ms_mean": _ms(_nanmean(f.edge_time for f in edge_ok)),
        "batch_size_mean": _nanmean(f.batch_size for f in edge_ok if f.batch_size),
    }

    # Mode timeline (link monitor).
    segments = []
    for s in robot.states:
        if not segments or (segments[-1]["mode"], segments[-1]["split_index"]) != (s.mode, s.split_index):
            segments.append({"start_s": rel(s.t), "end_s": rel(s.t), "mode": s.mode, "split_index": s.split_index,
                             "reason": s.reason, "_rates": []})
        segments[-1]["_rates"].append(s.rate_bps)
    for seg, nxt in zip(segments, segments[1:] + [None]):
        seg["end_s"] = nxt["start_s"] if nxt else rel(robot.states[-1].t)
        rates = seg.pop("_rates")
        seg.update({"states": len(rates), "rate_bps_mean": float(np.mean(rates)),
                    "rate_bps_min": float(min(rates)), "rate_bps_max": float(max(rates))})
    time_in_mode = defaultdict(float)
    for seg in segments:
        time_in_mode[seg["mode"]] += seg["end_s"] - seg["start_s"]
    if not has_feedback:
        notes.append("no FrameFeedback recorded: where sent frames were lost (link or edge) is unknown")
    if not times:
        notes.append("the fsplit topics were recorded but hold no messages")
    if not robot.states:
        notes.append("no LinkState recorded (no link monitor): no mode timeline")

    # Agreement with the local model.
    if robot.agreement_skipped or "image" not in robot.topics:
        agreement = {"skipped": robot.agreement_skipped or "camera frames not recorded"}
    else:
        local_by_stamp = {f.stamp: f.local_class for f in frames if f.local_class is not None}
        agree = defaultdict(lambda: [0, 0])
        for x in per_result:
            if x["stamp_ns"] in local_by_stamp:
                x["local_class_id"] = local_by_stamp[x["stamp_ns"]]
                hit = x["class_id"] == x["local_class_id"]
                for key in ("all", x["mode"]):
                    agree[key][0] += 1
                    agree[key][1] += hit
        row = lambda n, k: {"evaluated": n, "agree": k, "rate": k / n if n else None}  # noqa: E731
        agreement = {
            "backbone": agreement_backbone, **row(*agree["all"]),
            "by_mode": {m: row(*agree[m]) for m in lat_modes if agree[m][0]},
            "results_without_frame": sum(1 for x in per_result if x["stamp_ns"] not in frame_stamps),
            "unconvertible_frames": robot.unconvertible_frames,
        }
        if agreement_backbone and models and agreement_backbone not in models:
            warnings.append(f"agreement computed with {agreement_backbone}, but the payloads name the model "
                            f"{', '.join(models)}: pass --backbone {models[0]}")

    # Clock consistency: camera -> recorder delay of the frames themselves.
    delays = [(f.t - f.stamp) / 1e6 for f in frames]
    clock = {"note": CLOCK_NOTE, "camera_to_recorder_ms": _stats(delays) if delays else None}
    if delays:
        med = float(np.median(delays))
        if med < 0 or med > CLOCK_DELAY_LIMIT_MS:
            clock_consistent = False
            warnings.append(f"camera frames reached the recorder {med:.0f} ms after their stamp (median): "
                            f"the camera stamps and the recorder's clock differ, so latencies are offset "
                            f"by about that much")
    clock["consistent"] = clock_consistent

    series = {
        "bitrate": {"bin_s": bin_s, "t_s": [i * bin_s for i in range(nbins)],
                    "bps_by_mode": {m: [b / bin_s for b in v] for m, v in bits.items()}},
        "link_state": {"t_s": [rel(s.t) for s in robot.states], "rate_bps": [s.rate_bps for s in robot.states],
                       "rtt_s": [s.rtt for s in robot.states], "mode": [s.mode for s in robot.states],
                       "split_index": [s.split_index for s in robot.states]},
        "results": per_result,
    }
    return {"namespace": robot.namespace, "topics": dict(sorted(robot.topics.items())),
            "start_ns": start, "duration_s": duration_s, "delivery": delivery, "payloads": payload_report,
            "latency_ms": latency, "feedback": feedback, "mode_timeline": segments,
            "time_in_mode_s": {m: time_in_mode[m] for m in _ordered(time_in_mode)},
            "mode_switches": max(0, len(segments) - 1), "agreement": agreement, "clock": clock,
            "warnings": warnings, "notes": notes, "series": series}


def analyse(data: BagData, bin_s: float = 1.0, agreement_backbone: str | None = None) -> dict:
    robots = {ns: analyse_robot(r, bin_s, agreement_backbone) for ns, r in sorted(data.robots.items())}
    return {"bag": data.path, "storage": data.storage, "message_count": data.message_count,
            "clocks": CLOCK_NOTE, "robots": robots, "other_topics": dict(sorted(data.other_topics.items()))}


# --- Output ---------------------------------------------------------------------------------------

def _f(value, fmt: str = ".1f", none: str = "-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return none
    return format(value, fmt)


def format_table(report: dict) -> str:
    """The terminal summary."""
    lines = [f"fsplit bag report: {report['bag']} ({report['storage']}, {report['message_count']} messages)",
             f"clocks: {report['clocks']}"]
    for ns, r in report["robots"].items():
        d, pay, fb, agr = r["delivery"], r["payloads"], r["feedback"], r["agreement"]
        lines += ["", f"robot {ns}  ({r['duration_s']:.1f} s; topics: "
                      + ", ".join(f"{k}={v}" for k, v in r["topics"].items()) + ")"]
        cam = (f"camera {d['camera_frames']} frames ({_f(d['camera_fps'])} fps)" if d["camera_frames"] is not None
               else "camera not recorded")
        line = f"  frames: {cam}, results {d['results']} ({_f(d['delivered_fps'])} fps delivered)"
        if d.get("delivery_ratio") is not None:
            lost = ", ".join(f"{k} {v}" for k, v in d["lost"].items())
            line += (f", delivered {d['frames_with_result']}/{d['camera_frames']} = {d['delivery_ratio']:.3f}"
                     f"; without result {d['frames_without_result']} ({lost})")
        lines.append(line)
        lines.append(f"  payloads: {pay['count']}, {pay['bytes_total']} bytes, mean "
                     f"{_f(pay['mean_bitrate_bps'] and pay['mean_bitrate_bps'] / 1e3, '.1f')} kbit/s, "
                     f"seq gaps {pay['seq_gaps']}, restarts {pay['seq_restarts']}; feedback {fb['count']} "
                     f"(ok {fb['ok']}, rejected {fb['rejected']}"
                     + (f": {fb['rejected_by_kind']}" if fb["rejected_by_kind"] else "")
                     + f"), payloads without feedback {_f(fb['payloads_without_feedback'], 'd')}")
        header = (f"  {'mode':<11}{'results':>8}{'payloads':>9}{'bytes/frame':>12}{'min..max':>16}"
                  f"{'kbit/s act.':>12}{'lat p50':>9}{'p95':>8}{'max ms':>8}{'agreement':>15}")
        lines += [header, "  " + "-" * (len(header) - 2)]
        for mode in _ordered(list(pay["by_mode"]) + list(r["latency_ms"]["by_mode"])):
            bm = pay["by_mode"].get(mode)
            lat = r["latency_ms"]["by_mode"].get(mode, {"count": 0})
            ag = agr.get("by_mode", {}).get(mode)
            splits = f"@{','.join(bm['split_indices'])}" if bm and mode == "split" else ""
            lines.append(
                f"  {mode + splits:<11}{lat['count']:>8}{bm['frames'] if bm else 0:>9}"
                f"{_f(bm and bm['bytes_mean'], '.0f'):>12}"
                f"{(str(bm['bytes_min']) + '..' + str(bm['bytes_max'])) if bm else '-':>16}"
                f"{_f(bm and bm['bitrate_bps_while_active'] / 1e3):>12}"
                f"{_f(lat.get('p50'), '.0f'):>9}{_f(lat.get('p95'), '.0f'):>8}{_f(lat.get('max'), '.0f'):>8}"
                f"{(str(ag['agree']) + '/' + str(ag['evaluated']) + ' ' + format(ag['rate'], '.3f')) if ag else '-':>15}")
        la = r["latency_ms"]["all"]
        lines.append(f"  {'all':<11}{la['count']:>8}{pay['count']:>9}{'':>12}{'':>16}{'':>12}"
                     f"{_f(la.get('p50'), '.0f'):>9}{_f(la.get('p95'), '.0f'):>8}{_f(la.get('max'), '.0f'):>8}"
                     + (f"{str(agr['agree']) + '/' + str(agr['evaluated']) + ' ' + _f(agr['rate'], '.3f'):>15}"
                        if "evaluated" in agr else f"{'skipped':>15}"))
        if "skipped" in agr:
            lines.append(f"  agreement skipped: {agr['skipped']}")
        elif agr.get("results_without_frame"):
            lines.append(f"  agreement: {agr['results_without_frame']} result(s) have no recorded frame")
        if r["mode_timeline"]:
            lines.append(f"  mode timeline (link monitor; {r['mode_switches']} switches):")
            lines.append(f"    {'start s':>8}{'end s':>8}  {'mode':<14}{'rate Mbit/s':>12}  reason")
            for seg in r["mode_timeline"]:
                # split_index 0 in a LinkState = the encoder's default split point
                label = seg["mode"] + (f"@{seg['split_index']}" if seg["mode"] == "split" and seg["split_index"]
                                       else "")
                lines.append(f"    {seg['start_s']:8.2f}{seg['end_s']:8.2f}  {label:<14}"
                             f"{seg['rate_bps_mean'] / 1e6:12.2f}  {seg['reason']}")
        cd = r["clock"]["camera_to_recorder_ms"]
        if cd:
            lines.append(f"  clock check: camera -> recorder delay p50 {cd['p50']:.1f} ms "
                         f"({'consistent' if r['clock']['consistent'] else 'INCONSISTENT'})")
        lines += [f"  WARNING: {w}" for w in r["warnings"]]
        lines += [f"  note: {n}" for n in r["notes"]]
    if report["other_topics"]:
        lines += ["", "not evaluated: " + ", ".join(f"{t} ({m})" for t, m in report["other_topics"].items())]
    return "\n".join(lines)


def _slug(ns: str) -> str:
    return ns.strip("/").replace("/", "_") or "root"


def write_plots(report: dict, out_dir: str | Path) -> list[Path]:
    """bitrate.png, latency_cdf.png and mode_timeline.png per robot (prefixed by the namespace when
    the bag has several robots)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    written = []
    several = len(report["robots"]) > 1
    for ns, r in report["robots"].items():
        prefix = f"{_slug(ns)}_" if several else ""
        title = f"robot {ns}"

        fig, ax = plt.subplots(figsize=(10, 4))
        br = r["series"]["bitrate"]
        bottom = np.zeros(len(br["t_s"]))
        for mode, bps in br["bps_by_mode"].items():
            vals = np.asarray(bps) / 1e3
            ax.bar(br["t_s"], vals, width=br["bin_s"], bottom=bottom, align="edge",
                   color=MODE_COLORS.get(mode), label=mode)
            bottom += vals
        ls = r["series"]["link_state"]
        if ls["t_s"]:
            ax.plot(ls["t_s"], np.asarray(ls["rate_bps"]) / 1e3, "k--", lw=1, label="measured link rate")
            ax.set_yscale("symlog", linthresh=10)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("kbit/s")
        ax.set_title(f"{title}: payload bitrate by mode ({br['bin_s']:g} s bins)")
        if br["bps_by_mode"] or ls["t_s"]:
            ax.legend(loc="upper right")
        fig.tight_layout()
        written.append(out_dir / f"{prefix}bitrate.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(7, 4.5))
        results = r["series"]["results"]
        for mode in _ordered(x["mode"] for x in results):
            lat = np.sort([x["latency_ms"] for x in results if x["mode"] == mode])
            ax.step(lat, np.arange(1, lat.size + 1) / lat.size, where="post", color=MODE_COLORS.get(mode),
                    label=f"{mode} (n={lat.size}, p50 {np.median(lat):.0f} ms)")
        lats = [x["latency_ms"] for x in results if x["latency_ms"] > 0]
        if lats and max(lats) / min(lats) > 30:
            ax.set_xscale("log")
        ax.set_xlabel("end-to-end latency (ms): result receipt - camera stamp")
        ax.set_ylabel("fraction of results")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(f"{title}: latency CDF per mode")
        if results:
            ax.legend(loc="lower right")
        fig.tight_layout()
        written.append(out_dir / f"{prefix}latency_cdf.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(10, 4))
        seen = set()
        for seg in r["mode_timeline"]:
            ax.axvspan(seg["start_s"], max(seg["end_s"], seg["start_s"] + 1e-3), alpha=0.25, lw=0,
                       color=MODE_COLORS.get(seg["mode"], "grey"),
                       label=None if seg["mode"] in seen else f"mode {seg['mode']}")
            seen.add(seg["mode"])
        if ls["t_s"]:
            ax.plot(ls["t_s"], np.asarray(ls["rate_bps"]) / 1e6, "k-", lw=1.2, label="measured rate")
            ax.set_yscale("symlog", linthresh=0.1)
            ax.legend(loc="upper right", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no LinkState recorded", transform=ax.transAxes, ha="center")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("Mbit/s")
        ax.set_title(f"{title}: commanded mode over the link monitor's measured rate")
        fig.tight_layout()
        written.append(out_dir / f"{prefix}mode_timeline.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def evaluate_bag(path: str | Path, out_dir: str | Path | None = None, backbone: str = "efficientnet_lite0",
                 agreement: bool = True, bin_s: float = 1.0, classify: Callable | None = None) -> dict:
    """Read, analyse, and (with out_dir) write report.json and the plots. classify overrides the
    local model used for the agreement (see read_bag)."""
    import json

    if bin_s <= 0:
        raise BagReportError(f"bin_s must be positive, got {bin_s}")
    if agreement and classify is None:
        classify = LocalModelClassifier(backbone)
    data = read_bag(path, classify if agreement else None)
    if not agreement:
        for robot in data.robots.values():
            robot.agreement_skipped = "disabled (--no-agreement)"
    # The model named in the report (and checked against the payloads' model_name): ours, or whatever
    # a custom classifier says it is.
    label = getattr(classify, "backbone", None) if agreement else None
    report = analyse(data, bin_s, label)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        report["plots"] = [str(p) for p in write_plots(report, out_dir)]
        (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    return report
