"""Draw the detections a run published onto the camera frames it recorded (from the rosbag), so a
person can see what the robot saw: `draw_detections(bag, out_png)`."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import Reader

from fsplit_ros.evaluation.bag_types import fsplit_typestore
from fsplit_ros.imaging import to_rgb8


def _stamp(msg) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def draw_detections(bag: str | Path, out_png: str | Path, panels: int = 4, min_score: float = 0.35) -> int:
    """Pick the `panels` recorded frames with the most detections and draw them; returns how many
    frames had detections."""
    store = fsplit_typestore()
    images, detections = {}, {}
    with Reader(bag) as reader:
        for conn, _, raw in reader.messages():
            if conn.msgtype == "sensor_msgs/msg/Image":
                msg = store.deserialize_cdr(raw, conn.msgtype)
                images[_stamp(msg)] = msg
            elif conn.msgtype == "vision_msgs/msg/Detection2DArray":
                msg = store.deserialize_cdr(raw, conn.msgtype)
                detections[_stamp(msg)] = msg
    both = [s for s in detections if s in images and detections[s].detections]
    if not both:
        return 0
    both.sort(key=lambda s: len(detections[s].detections), reverse=True)
    chosen = sorted(both[:panels])
    tiles = []
    for stamp in chosen:
        img = images[stamp]
        rgb = to_rgb8(img.encoding, img.height, img.width, img.step, bytes(img.data))
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        for det in detections[stamp].detections:
            hyp = det.results[0].hypothesis
            if hyp.score < min_score:
                continue
            cx, cy, w, h = det.bbox.center.position.x, det.bbox.center.position.y, det.bbox.size_x, det.bbox.size_y
            p1, p2 = (int(cx - w / 2), int(cy - h / 2)), (int(cx + w / 2), int(cy + h / 2))
            cv2.rectangle(bgr, p1, p2, (0, 200, 255), 2)
            cv2.putText(bgr, f"{hyp.class_id} {hyp.score:.2f}", (p1[0], max(12, p1[1] - 4)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 200, 255), 1, cv2.LINE_AA)
        tiles.append(cv2.resize(bgr, (480, int(480 * bgr.shape[0] / bgr.shape[1]))))
    height = max(t.shape[0] for t in tiles)
    tiles = [np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0))) for t in tiles]
    rows = [np.hstack(tiles[i:i + 2] + ([np.zeros_like(tiles[0])] if len(tiles[i:i + 2]) == 1 else []))
            for i in range(0, len(tiles), 2)]
    cv2.imwrite(str(out_png), np.vstack(rows))
    return len(both)
