"""Benchmark 6: the offboard decoder's throughput with 1, 2, 4 and 8 robots, batched
(max_batch 8) vs unbatched (max_batch 1). A load process publishes real pre-encoded payloads for
every robot namespace faster than the edge can decode (30 fps per robot); the decoder runs as its
own process over DDS on loopback; throughput = results per second received back.

    python bench/decoder_throughput.py [--seconds 15] [--mode bottleneck] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from vision_msgs.msg import Classification

from common import heldout_frames, write_results
from fsplit_ros.msg import CompressedFeature, FrameFeedback
from fsplit_ros.process_graph import ProcessGraph
from fsplit_ros.runtime import Deployment, OnboardEncoder


def payload_messages(mode: str) -> list[CompressedFeature]:
    dep = Deployment.load("efficientnet_lite0")
    enc = OnboardEncoder(dep)
    index = dep.compressive_split_indices()[2] if mode == "split" else None
    msgs = []
    for rgb in heldout_frames(8):
        header, data = enc.encode_frame(enc.prepare(rgb), mode, index)
        msgs.append(CompressedFeature(mode=mode, model_name=dep.name, model_hash=header.model_hash,
                                      split_index=header.split_index, shape=list(header.shape), dtype=header.dtype,
                                      codec=header.codec, image_width=header.image_width,
                                      image_height=header.image_height, data=data))
    return msgs


def measure(robots: int, max_batch: int, seconds: float, msgs, threads: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="fsplit_decoder_bench_"))
    names = [f"/r{i}" for i in range(robots)]
    os.environ["ROS_DOMAIN_ID"] = str(60 + os.getpid() % 30)
    graph = ProcessGraph(work, env={"ROS_DOMAIN_ID": os.environ["ROS_DOMAIN_ID"]})
    graph.start("decoder", "decoder_node", "edge",
                params={"robot_namespaces": names, "max_batch": max_batch,
                        "batch_window_ms": 5.0 if max_batch > 1 else 0.0, "num_threads": threads})
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = Node("fsplit_decoder_load", context=ctx)
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
    pubs = [node.create_publisher(CompressedFeature, f"{n}/compressed_feature", qos) for n in names]
    counts, batches, lock = {"n": 0}, [], threading.Lock()

    def on_result(_msg):
        with lock:
            counts["n"] += 1

    def on_feedback(msg):
        with lock:
            batches.append(msg.batch_size)
    for n in names:
        node.create_subscription(Classification, f"{n}/classification", on_result, 100)
        node.create_subscription(FrameFeedback, f"{n}/frame_feedback", on_feedback, 100)
    executor = MultiThreadedExecutor(context=ctx)
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    seq = [0]

    def publish_all():
        for pub in pubs:
            msg = msgs[seq[0] % len(msgs)]
            seq[0] += 1
            msg.seq = seq[0]
            msg.header.stamp = node.get_clock().now().to_msg()
            pub.publish(msg)
    node.create_timer(1 / 30.0, publish_all)
    try:
        deadline = time.time() + 120
        while counts["n"] < 5 * robots and time.time() < deadline:   # decoder up and warm
            assert not graph.dead(), graph.log("decoder")[-2000:]
            time.sleep(0.2)
        with lock:
            counts["n"], batches[:] = 0, []
        t0 = time.time()
        time.sleep(seconds)
        with lock:
            done, sizes = counts["n"], list(batches)
        elapsed = time.time() - t0
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        graph.close()
    return {"fps": done / elapsed, "mean_batch": sum(sizes) / max(len(sizes), 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--mode", default="bottleneck", choices=["bottleneck", "split", "image"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    msgs = payload_messages(args.mode)
    rows = ["| robots | unbatched frames/s | batched frames/s | speed-up | mean batch size |", "|---|---|---|---|---|"]
    data = {}
    for robots in (1, 2, 4, 8):
        single = measure(robots, 1, args.seconds, msgs, args.threads)
        batched = measure(robots, 8, args.seconds, msgs, args.threads)
        data[robots] = {"unbatched": single, "batched": batched}
        rows.append(f"| {robots} | {single['fps']:.1f} | {batched['fps']:.1f} | {batched['fps'] / single['fps']:.2f}x | "
                    f"{batched['mean_batch']:.2f} |")
        print(rows[-1], flush=True)
    md = (f"# Decoder throughput ({args.mode} payloads, {args.threads} torch threads on the edge)\n\n"
          f"Offered load 30 fps per robot (more than one edge process decodes); {args.seconds:g} s per cell; "
          f"decoder and load generator are separate processes over DDS on loopback.\n\n" + "\n".join(rows))
    write_results(f"decoder_throughput_{args.mode}", md, data)


if __name__ == "__main__":
    sys.exit(main())
