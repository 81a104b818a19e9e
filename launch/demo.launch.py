"""The whole graph on one machine: video source -> encoder + link monitor -> decoder."""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from fsplit_ros.launch_support import large_frame_dds_profile


def generate_launch_description():
    share = FindPackageShare("fsplit_ros")
    args = {
        "video": ("", "video file or device index; '' = bundled demo video"),
        "rate": ("10.0", "camera frames per second"),
        "backbone": ("efficientnet_lite0", "model on both ends"),
    }
    declared = [DeclareLaunchArgument(k, default_value=v, description=d) for k, (v, d) in args.items()]
    arg = {k: LaunchConfiguration(k) for k in args}
    source = Node(package="fsplit_ros", executable="video_source_node", name="fsplit_video_source",
                  output="screen",
                  parameters=[PathJoinSubstitution([share, "config", "video_source.yaml"]),
                              {"source": arg["video"], "rate": arg["rate"]}],
                  remappings=[("image", "camera/image_raw")])
    robot = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", "robot.launch.py"])),
        launch_arguments={"camera_topic": "camera/image_raw", "backbone": arg["backbone"]}.items())
    edge = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", "edge.launch.py"])),
        launch_arguments={"backbone": arg["backbone"]}.items())
    return LaunchDescription(declared + large_frame_dds_profile(PathJoinSubstitution([share, "config"]))
                             + [source, robot, edge])
