"""Robot side: onboard encoder + link monitor. Remap your camera in with camera_topic:=...

    ros2 launch fsplit_ros robot.launch.py namespace:=robot1 camera_topic:=/camera/color/image_raw
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from fsplit_ros.launch_support import large_frame_dds_profile


def generate_launch_description():
    config = PathJoinSubstitution([FindPackageShare("fsplit_ros"), "config"])
    args = {
        "namespace": ("", "robot namespace (results and payload topics live under it)"),
        "camera_topic": ("/camera/image_raw", "sensor_msgs/Image topic of your camera"),
        "encoder_params": (PathJoinSubstitution([config, "encoder.yaml"]), "encoder parameter file"),
        "link_monitor_params": (PathJoinSubstitution([config, "link_monitor.yaml"]),
                                "link monitor parameter file"),
        "backbone": ("efficientnet_lite0", "model name; must match the edge"),
        "weights": ("", "local backbone checkpoint ('' = offline default); must match the edge"),
        "bottleneck_checkpoint": ("default", "FrankenSplit checkpoint ('default' = shipped); must match the edge"),
        "allowed_modes": ("[local, split, bottleneck, image]", "modes the link monitor may pick"),
        "models": ("['']", "the edge's models (edge.launch.py models:=), so the cost model counts their edge time"),
        "decoder_dir": ("", "the edge's decoder_dir (edge.launch.py decoder_dir:=)"),
    }
    declared = [DeclareLaunchArgument(k, default_value=v, description=d) for k, (v, d) in args.items()]
    arg = {k: LaunchConfiguration(k) for k in args}
    encoder = Node(package="fsplit_ros", executable="encoder_node", name="fsplit_encoder",
                   namespace=arg["namespace"], output="screen",
                   parameters=[arg["encoder_params"], {"backbone": arg["backbone"], "weights": arg["weights"],
                                                       "bottleneck_checkpoint": arg["bottleneck_checkpoint"]}],
                   remappings=[("image", arg["camera_topic"])])
    link_monitor = Node(package="fsplit_ros", executable="link_monitor_node", name="fsplit_link_monitor",
                        namespace=arg["namespace"], output="screen",
                        parameters=[arg["link_monitor_params"], {
                            "allowed_modes": arg["allowed_modes"], "models": arg["models"], "decoder_dir": arg["decoder_dir"],
                            "backbone": arg["backbone"],
                            "weights": arg["weights"], "bottleneck_checkpoint": arg["bottleneck_checkpoint"]}])
    return LaunchDescription(declared + large_frame_dds_profile(config) + [encoder, link_monitor])
