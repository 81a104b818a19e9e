"""Pieces shared by the launch files (`large_frame_dds_profile` needs ROS 2 `launch`, imported
only when a launch file calls it)."""
from __future__ import annotations

import os

# The parameters that name the deployed model. The robot's encoder and link monitor and the edge's
# decoder must agree on them (payloads carry the model's hash and a mismatch is refused), so every
# launch file and process_graph.start_standard_graph pass each of them to all three.
MODEL_PARAMETERS = ("backbone", "weights", "bottleneck_checkpoint")

# The further edge models answering each bottleneck payload (issue 19): the edge's decoder runs them,
# the robot's link monitor times them, so both take the same two parameters.
SHARED_MODEL_PARAMETERS = ("models", "decoder_dir")


def further_model_names(models, backbone: str) -> list[str]:
    """The models of a `models` parameter beyond the backbone's own (empty names dropped, each once)."""
    return list(dict.fromkeys(m for m in models if m and m != backbone))

# Fast DDS 2 (up to Jazzy) reads FASTRTPS_DEFAULT_PROFILES_FILE; Fast DDS 3 (Kilted on) reads
# FASTDDS_DEFAULT_PROFILES_FILE, and when both are set its ROS layer parses the file a second time:
# every node then logs "XMLPARSER Error ... other transport with the same id".
FAST_DDS_2_DISTROS = frozenset({"foxy", "galactic", "humble", "iron", "jazzy"})


def dds_profile_variable(ros_distro: str | None = None) -> str:
    """The one environment variable this ROS distribution's Fast DDS reads its profile file from."""
    distro = (ros_distro if ros_distro is not None else os.environ.get("ROS_DISTRO", "")).lower()
    return "FASTRTPS_DEFAULT_PROFILES_FILE" if distro in FAST_DDS_2_DISTROS else "FASTDDS_DEFAULT_PROFILES_FILE"


def large_frame_dds_profile(config_dir) -> list:
    """Point Fast DDS at config/fastdds_large_frames.xml unless the user already chose a profile:
    with Fast DDS's default 512 KiB shared-memory segment, camera frames larger than that are mostly
    lost before the encoder sees them."""
    from launch.actions import SetEnvironmentVariable
    from launch.substitutions import EnvironmentVariable, PathJoinSubstitution

    name = dds_profile_variable()
    profile = PathJoinSubstitution([config_dir, "fastdds_large_frames.xml"])
    return [SetEnvironmentVariable(name, EnvironmentVariable(name, default_value=profile))]
