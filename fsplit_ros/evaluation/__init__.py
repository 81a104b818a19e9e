"""Evaluation: rosbag reading/writing with the package's own message definitions, and reports."""
