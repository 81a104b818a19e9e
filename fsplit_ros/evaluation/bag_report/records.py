"""What a bag report reads from a bag: one plain record per message (no message objects kept), per
robot, and the error a bag that cannot be evaluated raises."""
from __future__ import annotations

from dataclasses import dataclass, field

from fsplit_ros.payload.errors import ERROR_KIND_NAMES
from fsplit_ros.tasks import TASKS

MSG_FEATURE = "fsplit_ros/msg/CompressedFeature"
MSG_FEEDBACK = "fsplit_ros/msg/FrameFeedback"
MSG_LINK_STATE = "fsplit_ros/msg/LinkState"
MSG_IMAGE = "sensor_msgs/msg/Image"
# Result roles: each task's result topic (classification, detections), read by the task.
RESULT_ROLES = {task.result_topic: task for task in TASKS.values()}
# Message type -> role; the canonical (unremapped) topic base name is the role itself.
ROLES = {MSG_FEATURE: "compressed_feature", MSG_FEEDBACK: "frame_feedback", MSG_LINK_STATE: "link_state",
         **{task.result_type: role for role, task in RESULT_ROLES.items()}}
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
    summary: object   # the task's summary of the result (Task.from_msg): top-1 class id, detections


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
    reference: object = None   # the local model's result summary, where agreement was computed


@dataclass
class RobotData:
    namespace: str
    topics: dict[str, str] = field(default_factory=dict)         # role -> topic used
    payloads: list[Payload] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    task: object = None          # the fsplit_ros.tasks.Task of the results (None: no results topic)
    feedback: list[Feedback] = field(default_factory=list)
    states: list[State] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unconvertible_frames: int = 0
    agreement_skipped: str | None = None
    further: dict[str, list[Result]] = field(default_factory=dict)   # further edge model -> its results
    further_topics: dict[str, str] = field(default_factory=dict)     # further edge model -> topic


@dataclass
class BagData:
    path: str
    storage: str
    message_count: int
    robots: dict[str, RobotData]
    other_topics: dict[str, str]     # topic -> type, not used



def stamp_ns(stamp) -> int:
    return int(stamp.sec) * NS + int(stamp.nanosec)


