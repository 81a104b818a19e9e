"""Per robot: bytes and bitrate by mode, latency by mode, delivery and where frames were lost, the
edge's feedback, the mode timeline, the agreement with the local model, and a clock check."""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable

import numpy as np

from fsplit_ros.evaluation.bag_report.records import (CLOCK_DELAY_LIMIT_MS, CLOCK_NOTE, NS, BagData, Payload,
                                                      Result, RobotData)
from fsplit_ros.modes import LOCAL, mode_order

def _nanmean(values) -> float | None:
    a = np.asarray(list(values), dtype=float)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else None

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


def _payloads(pays: list[Payload], start: int, nbins: int, bin_s: float, duration_s: float):
    """Bytes per frame by mode (and split point), bitrate per bin by mode, seq gaps."""
    bin_ns = int(round(bin_s * NS))
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
    total_bytes = sum(p.nbytes for p in pays)
    report = {
        "count": len(pays), "bytes_total": total_bytes,
        "mean_bitrate_bps": total_bytes * 8 / duration_s if duration_s > 0 else None,
        "seq_gaps": gaps, "seq_restarts": restarts, "models": sorted({p.model_name for p in pays if p.model_name}),
        "by_mode": by_mode, "by_mode_and_split": by_payload,
        "encode_time_ms_mean": _ms(_nanmean(p.encode_time for p in pays)),
    }
    return report, bits


def _per_result(robot: RobotData, by_stamp: dict[int, list[Payload]], rel) -> list[dict]:
    """Each result with its latency and the mode its frame was sent in (`local`: no payload)."""
    task = robot.task
    out = []
    for r in robot.results:
        p = payload_for(r, by_stamp)
        out.append({"t_s": rel(r.t), "stamp_ns": r.stamp, "mode": p.mode if p else LOCAL,
                    "split_index": p.split_index if p else None, "latency_ms": (r.t - r.stamp) / 1e6,
                    "result": task.summary_json(r.summary)})
    return out


def _delivery(robot: RobotData, payload_stamps: set[int], fb_by_stamp, notes: list[str]) -> dict:
    """Camera frames vs results, and where each frame without a result was lost."""
    result_stamps = {r.stamp for r in robot.results}
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
    if "image" not in robot.topics:
        notes.append("camera frames were not recorded: frames dropped on the robot before encoding "
                     "cannot be counted, and there is no agreement")
        return delivery
    has_feedback = "frame_feedback" in robot.topics
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
    return delivery


def _feedback(robot: RobotData, payload_stamps: set[int], fb_by_stamp) -> dict:
    """The edge's view: FrameFeedback counts, rejections by typed kind, edge time, batch size."""
    errors = Counter(f.error_kind for f in robot.feedback if not f.ok)
    fb_gaps, fb_restarts = _seq_breaks([f.seq for f in robot.feedback])
    edge_ok = [f for f in robot.feedback if f.ok]
    return {
        "count": len(robot.feedback), "ok": len(edge_ok), "rejected": len(robot.feedback) - len(edge_ok),
        "rejected_by_kind": dict(sorted(errors.items())),
        "payloads_without_feedback": (len(payload_stamps - set(fb_by_stamp))
                                      if "frame_feedback" in robot.topics else None),
        "seq_gaps": fb_gaps, "seq_restarts": fb_restarts,
        "edge_time_ms_mean": _ms(_nanmean(f.edge_time for f in edge_ok)),
        "batch_size_mean": _nanmean(f.batch_size for f in edge_ok if f.batch_size),
    }


def _mode_timeline(robot: RobotData, rel) -> list[dict]:
    """Segments of the mode (and split point) the link monitor commanded, with its measured rate."""
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
    return segments


def _agreement(robot: RobotData, per_result: list[dict], modes: list[str], reference_task,
               agreement_backbone: str | None, models: list[str], warnings: list[str]) -> dict:
    """The received results against the local model's on the same recorded frames, overall and per
    mode, in the task's metric (top-1 agreement, fidelity mAP@0.5) with its 95 % interval."""
    if robot.agreement_skipped or "image" not in robot.topics:
        return {"skipped": robot.agreement_skipped or "camera frames not recorded"}
    task = robot.task
    if task is None:
        return {"skipped": "no results recorded"}
    if reference_task is not None and reference_task.name != task.name:
        return {"skipped": f"the results are {task.name} ({task.result_type}), but the local model "
                           f"{agreement_backbone or ''} does {reference_task.name}: pass the robot's --backbone"}
    references = {f.stamp: f.reference for f in robot.frames if f.reference is not None}
    summaries = {r.stamp: r.summary for r in robot.results}
    pairs = defaultdict(list)
    for x in per_result:
        if x["stamp_ns"] in references:
            x["local_result"] = task.summary_json(references[x["stamp_ns"]])
            pair = (references[x["stamp_ns"]], summaries[x["stamp_ns"]])
            pairs["all"].append(pair)
            pairs[x["mode"]].append(pair)
    frame_stamps = {f.stamp for f in robot.frames}
    agreement = {
        "backbone": agreement_backbone, **task.agreement(pairs["all"]),
        "by_mode": {m: task.agreement(pairs[m]) for m in modes if pairs[m]},
        "results_without_frame": sum(1 for x in per_result if x["stamp_ns"] not in frame_stamps),
        "unconvertible_frames": robot.unconvertible_frames,
    }
    if agreement_backbone and models and agreement_backbone not in models:
        warnings.append(f"agreement computed with {agreement_backbone}, but the payloads name the model "
                        f"{', '.join(models)}: pass --backbone {models[0]}")
    return agreement


def _clock(robot: RobotData, warnings: list[str], consistent: bool) -> dict:
    """Camera -> recorder delay of the frames themselves: do the stamps and the recorder share a clock?"""
    delays = [(f.t - f.stamp) / 1e6 for f in robot.frames]
    clock = {"note": CLOCK_NOTE, "camera_to_recorder_ms": _stats(delays) if delays else None}
    if delays:
        med = float(np.median(delays))
        if med < 0 or med > CLOCK_DELAY_LIMIT_MS:
            consistent = False
            warnings.append(f"camera frames reached the recorder {med:.0f} ms after their stamp (median): "
                            f"the camera stamps and the recorder's clock differ, so latencies are offset "
                            f"by about that much")
    clock["consistent"] = consistent
    return clock


def analyse_robot(robot: RobotData, bin_s: float = 1.0, agreement_backbone: str | None = None,
                  reference_task=None) -> dict:
    """The report of one robot (namespace). reference_task: the task of the local model the
    agreement was computed with (a mismatch with the results' task skips the agreement)."""
    times = [r.t for name in ("payloads", "results", "feedback", "states", "frames") for r in getattr(robot, name)]
    start, end = (min(times), max(times)) if times else (0, 0)
    rel = lambda t: (t - start) / NS  # noqa: E731
    warnings: list[str] = []
    notes = list(robot.notes)
    duration_s = (end - start) / NS
    nbins = (end - start) // int(round(bin_s * NS)) + 1 if times else 0

    by_stamp: dict[int, list[Payload]] = defaultdict(list)
    for p in robot.payloads:
        by_stamp[p.stamp].append(p)
    payload_report, bits = _payloads(robot.payloads, start, nbins, bin_s, duration_s)

    per_result = _per_result(robot, by_stamp, rel)
    lat_modes = _ordered(x["mode"] for x in per_result)
    latency = {"all": _stats([x["latency_ms"] for x in per_result]),
               "by_mode": {m: _stats([x["latency_ms"] for x in per_result if x["mode"] == m]) for m in lat_modes}}
    negative = sum(1 for x in per_result if x["latency_ms"] < 0)
    if negative:
        warnings.append(f"{negative} result(s) arrived before their camera stamp: the camera and the "
                        f"recorder do not share a clock, latencies are offset")

    fb_by_stamp = defaultdict(list)
    for f in robot.feedback:
        fb_by_stamp[f.stamp].append(f)
    delivery = _delivery(robot, set(by_stamp), fb_by_stamp, notes)
    feedback = _feedback(robot, set(by_stamp), fb_by_stamp)

    segments = _mode_timeline(robot, rel)
    time_in_mode = defaultdict(float)
    for seg in segments:
        time_in_mode[seg["mode"]] += seg["end_s"] - seg["start_s"]
    if "frame_feedback" not in robot.topics:
        notes.append("no FrameFeedback recorded: where sent frames were lost (link or edge) is unknown")
    if not times:
        notes.append("the fsplit topics were recorded but hold no messages")
    if not robot.states:
        notes.append("no LinkState recorded (no link monitor): no mode timeline")

    agreement = _agreement(robot, per_result, lat_modes, reference_task, agreement_backbone,
                           payload_report["models"], warnings)
    clock = _clock(robot, warnings, consistent=not negative)

    series = {
        "bitrate": {"bin_s": bin_s, "t_s": [i * bin_s for i in range(nbins)],
                    "bps_by_mode": {m: [b / bin_s for b in v] for m, v in bits.items()}},
        "link_state": {"t_s": [rel(s.t) for s in robot.states], "rate_bps": [s.rate_bps for s in robot.states],
                       "rtt_s": [s.rtt for s in robot.states], "mode": [s.mode for s in robot.states],
                       "split_index": [s.split_index for s in robot.states]},
        "results": per_result,
    }
    return {"namespace": robot.namespace, "topics": dict(sorted(robot.topics.items())),
            "task": robot.task.name if robot.task else None,
            "start_ns": start, "duration_s": duration_s, "delivery": delivery, "payloads": payload_report,
            "latency_ms": latency, "feedback": feedback, "mode_timeline": segments,
            "time_in_mode_s": {m: time_in_mode[m] for m in _ordered(time_in_mode)},
            "mode_switches": max(0, len(segments) - 1), "agreement": agreement, "clock": clock,
            "further_models": _further_models(robot),
            "warnings": warnings, "notes": notes, "series": series}


def _further_models(robot: RobotData) -> dict:
    """Per further edge model (its results on <robot>/<model>/<result topic>): how many, how many
    answer frames the robot's own model answered too (one payload serving both), their latency.
    Their agreement with the unmodified model is not measured here (bench/shared_encoder.py)."""
    own = {r.stamp for r in robot.results}
    return {model: {"topic": robot.further_topics[model], "results": len(results),
                    "same_frames_as_robot_model": len({r.stamp for r in results} & own),
                    "latency_ms": _stats([(r.t - r.stamp) / 1e6 for r in results])}
            for model, results in sorted(robot.further.items())}


def analyse(data: BagData, bin_s: float = 1.0, agreement_backbone: str | None = None,
            reference_task=None) -> dict:
    robots = {ns: analyse_robot(r, bin_s, agreement_backbone, reference_task)
              for ns, r in sorted(data.robots.items())}
    return {"bag": data.path, "storage": data.storage, "message_count": data.message_count,
            "clocks": CLOCK_NOTE, "robots": robots, "other_topics": dict(sorted(data.other_topics.items()))}
