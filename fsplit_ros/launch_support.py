"""Pieces shared by the launch files (imported only by them: needs ROS 2 `launch`)."""
from launch.actions import SetEnvironmentVariable
from launch.substitutions import EnvironmentVariable, PathJoinSubstitution

DDS_PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


def large_frame_dds_profile(config_dir) -> list[SetEnvironmentVariable]:
    """Point Fast DDS at config/fastdds_large_frames.xml unless the user already chose a profile:
    with Fast DDS's default 512 KiB shared-memory segment, camera frames larger than that are mostly
    lost before the encoder sees them."""
    profile = PathJoinSubstitution([config_dir, "fastdds_large_frames.xml"])
    return [SetEnvironmentVariable(name, EnvironmentVariable(name, default_value=profile))
            for name in DDS_PROFILE_VARIABLES]
