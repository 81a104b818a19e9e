"""The demo's detections.png (fsplit_ros.evaluation.detection_frames), ROS-free: a synthetic rosbag2
bag with camera frames and Detection2DArray results; the drawn boxes must land where the
detections say, on the frame with the same stamp, and only above min_score."""
import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from fsplit_ros.evaluation.bag_types import fsplit_typestore
from fsplit_ros.evaluation.detection_frames import draw_detections

STORE = fsplit_typestore()
T = STORE.types
W, H = 96, 72                  # camera frame; each panel is drawn 480 px wide (scale 5)
BOX_BGR = (0, 200, 255)


def _header(sec):
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=0), frame_id="cam")


def _frame(sec):
    """A dark grey rgb8 frame (no colour of its own near the box colour)."""
    return T["sensor_msgs/msg/Image"](header=_header(sec), height=H, width=W, encoding="rgb8", is_bigendian=0,
                                      step=W * 3, data=np.full(H * W * 3, 40, np.uint8))


def _detections(sec, boxes):
    """boxes: [(class, score, x1, y1, x2, y2)] in camera pixels."""
    dets = []
    for cls, score, x1, y1, x2, y2 in boxes:
        det = T["vision_msgs/msg/Detection2D"](
            header=_header(sec),
            results=[T["vision_msgs/msg/ObjectHypothesisWithPose"](
                hypothesis=T["vision_msgs/msg/ObjectHypothesis"](class_id=cls, score=score),
                pose=T["geometry_msgs/msg/PoseWithCovariance"](
                    pose=T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                                                     orientation=T["geometry_msgs/msg/Quaternion"](
                                                         x=0.0, y=0.0, z=0.0, w=1.0)),
                    covariance=np.zeros(36)))],
            bbox=T["vision_msgs/msg/BoundingBox2D"](
                center=T["vision_msgs/msg/Pose2D"](position=T["vision_msgs/msg/Point2D"](x=(x1 + x2) / 2,
                                                                                         y=(y1 + y2) / 2),
                                                   theta=0.0),
                size_x=float(x2 - x1), size_y=float(y2 - y1)),
            id="")
        dets.append(det)
    return T["vision_msgs/msg/Detection2DArray"](header=_header(sec), detections=dets)


def _write_bag(path, frames, results):
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        cam = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=STORE)
        out = writer.add_connection("/detections", "vision_msgs/msg/Detection2DArray", typestore=STORE)
        for sec in frames:
            writer.write(cam, sec * 10**9, STORE.serialize_cdr(_frame(sec), "sensor_msgs/msg/Image"))
        for sec, boxes in results.items():
            writer.write(out, sec * 10**9 + 5, STORE.serialize_cdr(_detections(sec, boxes),
                                                                   "vision_msgs/msg/Detection2DArray"))
    return path


def _is_box_colour(pixel) -> bool:
    return int(pixel[0]) < 60 and abs(int(pixel[1]) - 200) < 40 and int(pixel[2]) > 200


def test_boxes_are_drawn_on_the_frame_they_belong_to(tmp_path):
    # Frame 1: a confident person and a weak detection; frame 2: nothing detected; frame 3: a result
    # whose camera frame was not recorded; frame 4: recorded but no result.
    bag = _write_bag(tmp_path / "bag", frames=[1, 2, 4], results={
        1: [("person", 0.9, 20, 10, 60, 50), ("dog", 0.2, 70, 55, 90, 70)], 2: [], 3: [("car", 0.8, 0, 0, 9, 9)]})
    out = tmp_path / "detections.png"
    assert draw_detections(bag, out) == 1                    # only frame 1 has both a frame and detections
    png = cv2.imread(str(out))
    assert png.shape == (H * 5, 960, 3)                      # one panel, padded to two columns
    scale = 5
    # the person's box: its left edge and top edge are drawn (2 px line), its inside is not
    assert _is_box_colour(png[30 * scale, 20 * scale])
    assert _is_box_colour(png[50 * scale, 40 * scale])
    assert not _is_box_colour(png[30 * scale, 40 * scale])
    # the weak detection (0.2 < min_score 0.35) is not drawn, and the empty second column stays black
    assert not _is_box_colour(png[62 * scale, 70 * scale]) and not _is_box_colour(png[60 * scale, 90 * scale])
    assert png[:, 480:].max() == 0


def test_a_bag_without_detections_draws_nothing(tmp_path):
    bag = _write_bag(tmp_path / "bag", frames=[1, 2], results={1: [], 2: []})
    out = tmp_path / "detections.png"
    assert draw_detections(bag, out) == 0
    assert not out.exists()


def test_the_frames_with_most_detections_are_chosen(tmp_path):
    results = {sec: [("person", 0.9, 10 * k, 10, 10 * k + 8, 30) for k in range(sec)] for sec in range(1, 7)}
    bag = _write_bag(tmp_path / "bag", frames=list(range(1, 7)), results=results)
    out = tmp_path / "detections.png"
    assert draw_detections(bag, out, panels=4) == 6
    png = cv2.imread(str(out))
    assert png.shape == (2 * H * 5, 960, 3)                  # 4 panels in 2 x 2, in stamp order: 3, 4, 5, 6
    first = png[:H * 5, :480]
    # frame 3 has boxes at x = 0, 10, 20 (camera px) but none at 30; frame 6 (last panel) has one at 50
    assert _is_box_colour(first[20 * 5, 20 * 5]) and not _is_box_colour(first[20 * 5, 30 * 5])
    assert _is_box_colour(png[H * 5 + 20 * 5, 480 + 50 * 5])
