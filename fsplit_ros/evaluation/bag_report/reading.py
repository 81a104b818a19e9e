"""Reading a rosbag2 folder (sqlite3 or MCAP) into per-robot records, without ROS: the fsplit topics
found by message type and grouped by namespace, camera frames matched to results, and the local
model's reference results for the agreement."""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable, Iterable

from fsplit_ros.evaluation.bag_report.records import (MSG_IMAGE, RESULT_ROLES, ROLES, BagData, BagReportError,
                                                      Feedback, Frame, Payload, Result, RobotData, State,
                                                      rejection_kind, stamp_ns)


def topic_namespace(topic: str) -> str:
    """'/robot1/compressed_feature' -> '/robot1'; '/compressed_feature' -> '/'."""
    parent = topic.rstrip("/").rsplit("/", 1)[0]
    return parent or "/"


def further_model(topic: str) -> tuple[str, str] | None:
    """'/robot1/efficientnet_lite2/classification' -> ('/robot1', 'efficientnet_lite2'): the results
    of a further edge model answering the robot's bottleneck payloads (the decoder's `models`);
    None for any other topic."""
    from fsplit_ros.runtime.shared_models import result_topic
    model_ns = topic_namespace(topic)
    model = model_ns.rsplit("/", 1)[-1]
    try:
        if not topic.endswith("/" + result_topic(model)):
            return None
    except ValueError:   # not a model name
        return None
    return topic_namespace(model_ns), model


def _messages(reader, connections: list):
    """The messages of these connections (rosbags reads *every* topic when given none)."""
    return reader.messages(connections=connections) if connections else ()


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



def _record(role: str, t: int, msg, topic: str = ""):
    """The record of one message. Fields the evaluation cannot do without are required; the rest
    (timings, model name) may be missing from a bag recorded with an older message definition."""
    opt = lambda name, default=math.nan: getattr(msg, name, default)  # noqa: E731
    try:
        if role == "compressed_feature":
            return Payload(t, stamp_ns(msg.header.stamp), int(msg.seq), str(msg.mode), int(msg.split_index),
                           len(msg.data), str(opt("model_name", "")), float(opt("encode_time")))
        if role in RESULT_ROLES:
            return Result(t, stamp_ns(msg.header.stamp), RESULT_ROLES[role].from_msg(msg))
        if role == "frame_feedback":
            return Feedback(t, stamp_ns(msg.header.stamp), int(msg.seq), int(msg.bytes), bool(msg.ok),
                            str(msg.error), float(opt("edge_time")), int(opt("batch_size", 0)),
                            rejection_kind(int(opt("error_kind", 0)), str(msg.error)))
        return State(t, float(msg.rate_bps), float(opt("rtt")), str(msg.mode), int(msg.split_index),
                     str(opt("reason", "")))
    except AttributeError as exc:
        raise BagReportError(f"{topic} ({type(msg).__name__}) was recorded with a message definition that "
                             f"lacks a field the evaluation needs: {exc}") from None



_LISTS = {"compressed_feature": "payloads", "frame_feedback": "feedback", "link_state": "states",
          **{role: "results" for role in RESULT_ROLES}}


def read_bag(path: str | Path, reference: Callable | None = None) -> BagData:
    """Read the fsplit topics of a rosbag2 folder into per-robot records.

    reference(image_msg) -> the local model's result summary (fsplit_ros.tasks.Task.summary, e.g. a
    top-1 class id): run on every recorded camera frame whose stamp has a result, for the
    agreement; None = no agreement. It may raise fsplit_ros.imaging.ImageEncodingError
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

        # Further edge models' results belong to the robot whose payloads they answer, when that
        # robot's namespace holds other fsplit topics (otherwise the namespace is a robot's own).
        namespaces = {topic_namespace(c.topic) for c in role_conns}
        further = {c.id: (c, *found) for c in role_conns if ROLES[c.msgtype] in RESULT_ROLES
                   and (found := further_model(c.topic)) and found[0] in namespaces}
        role_conns = [c for c in role_conns if c.id not in further]

        # One robot per namespace; per role, one topic (the canonical name, else the busiest).
        robots: dict[str, RobotData] = {}
        chosen = {}
        by_ns_role = defaultdict(list)
        for c in role_conns:
            by_ns_role[(topic_namespace(c.topic), ROLES[c.msgtype])].append(c)
        result_roles = defaultdict(list)   # a robot's results: one task's topic (the busiest)
        for (ns, role), candidates in by_ns_role.items():
            if role in RESULT_ROLES:
                result_roles[ns].append((sum(c.msgcount for c in candidates), role))
        for ns, found in result_roles.items():
            ranked = sorted(found, key=lambda cr: (-cr[0], cr[1] != "classification"))
            for count, role in ranked[1:]:
                if count:   # an empty topic (the recorder subscribes to every task's) is no result stream
                    robots.setdefault(ns, RobotData(ns)).notes.append(
                        f"{ns} publishes both {ranked[0][1]} and {role}: evaluated the busier one; record "
                        f"one model's results per namespace")
                del by_ns_role[(ns, role)]
        for (ns, role), candidates in sorted(by_ns_role.items()):
            counts = Counter()
            for c in candidates:
                counts[c.topic] += c.msgcount
            topics = sorted(counts, key=lambda t: (t.rsplit("/", 1)[-1] != role, -counts[t], t))
            robot = robots.setdefault(ns, RobotData(ns))
            robot.topics[role] = topics[0]
            if role in RESULT_ROLES:
                robot.task = RESULT_ROLES[role]
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
            elif c.id not in chosen and c.id not in further:
                other[c.topic] = c.msgtype

        for conn, t, raw in _messages(reader, [c for c in conns if c.id in chosen]):
            ns, role = chosen[conn.id]
            getattr(robots[ns], _LISTS[role]).append(_record(role, t, deser(raw, conn.msgtype), conn.topic))
        for c, ns, model in list(further.values()):
            if ns in robots:
                robots[ns].further[model], robots[ns].further_topics[model] = [], c.topic
            else:   # the robot's own topics were dropped (an empty result topic)
                other[c.topic] = c.msgtype
                del further[c.id]
        for conn, t, raw in _messages(reader, [c for c, _, _ in further.values()]):
            _, ns, model = further[conn.id]
            robots[ns].further[model].append(_record(ROLES[conn.msgtype], t, deser(raw, conn.msgtype), conn.topic))

        # Camera frames: stamps of every candidate topic, then pick the one matching the results.
        frames_by_topic: dict[str, list[Frame]] = defaultdict(list)
        image_ids = {c.id for cs in image_conns.values() for c in cs}
        if image_ids:
            for conn, t, raw in reader.messages(connections=[c for c in conns if c.id in image_ids]):
                frames_by_topic[conn.topic].append(Frame(t, stamp_ns(deser(raw, conn.msgtype).header.stamp)))
        to_reference = {}
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
            if reference is not None and getattr(reference, "task", robot.task) is robot.task:
                to_reference[ranked[0]] = (robot, {f.stamp: f for f in robot.frames if f.stamp in result_stamps})

        if reference is not None and any(todo for _, todo in to_reference.values()):
            from fsplit_ros.imaging import ImageEncodingError
            ids = [c.id for c in conns if c.topic in to_reference]
            for conn, _, raw in reader.messages(connections=[c for c in conns if c.id in ids]):
                robot, todo = to_reference[conn.topic]
                msg = deser(raw, conn.msgtype)
                frame = todo.get(stamp_ns(msg.header.stamp))
                if frame is None or frame.reference is not None:
                    continue
                try:
                    frame.reference = reference(msg)
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


class LocalModelReference:
    """reference(image_msg) -> the full local model's result summary (its task's `summary`: top-1
    class id, or detections), loaded on first use: the same preprocessing and model as the encoder
    node's local mode. `encoder`: an already loaded fsplit_ros.runtime.OnboardEncoder of that
    backbone to reuse."""

    def __init__(self, backbone: str = "efficientnet_lite0", encoder=None):
        if encoder is not None and encoder.dep.name != backbone:
            raise ValueError(f"the encoder given runs {encoder.dep.name}, not {backbone}")
        self.backbone = backbone
        self._encoder = encoder

    @property
    def task(self):
        """The task of this backbone (known without loading it)."""
        from fsplit_ros.models.backbones import resolve_spec
        from fsplit_ros.tasks import task_named
        try:
            return task_named(resolve_spec(self.backbone).task)
        except ValueError as exc:
            raise BagReportError(f"cannot load the local model '{self.backbone}' for the agreement: {exc}. "
                                 f"Pass the robot's --backbone, or --no-agreement") from exc

    def __call__(self, msg):
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
        dep = enc.dep
        output = enc.predict_local(enc.prepare(rgb))
        return dep.task.summary(dep.results(output, rgb.shape[1], rgb.shape[0]))
