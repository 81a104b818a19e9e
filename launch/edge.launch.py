"""Edge side: the offboard decoder, shared by the robots listed in robot_namespaces.

    ros2 launch fsplit_ros edge.launch.py robot_namespaces:="['/robot1', '/robot2']"
    ros2 launch fsplit_ros edge.launch.py models:="['efficientnet_lite0', 'efficientnet_lite2']"
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    config = PathJoinSubstitution([FindPackageShare("fsplit_ros"), "config"])
    args = {
        "decoder_params": (PathJoinSubstitution([config, "decoder.yaml"]), "decoder parameter file"),
        "backbone": ("efficientnet_lite0", "model name; must match the robots"),
        "weights": ("", "local backbone checkpoint ('' = offline default); must match the robots"),
        "bottleneck_checkpoint": ("default", "FrankenSplit checkpoint ('default' = shipped); must match the robots"),
        "robot_namespaces": ("['']", "namespaces of the robots this edge serves"),
        "models": ("['']", "edge models answering each bottleneck payload (['']: backbone alone), e.g. "
                           "\"['efficientnet_lite0', 'efficientnet_lite2']\""),
        "decoder_dir": ("", "folder of the models' decoders ('' = the shipped weights)"),
    }
    declared = [DeclareLaunchArgument(k, default_value=v, description=d) for k, (v, d) in args.items()]
    arg = {k: LaunchConfiguration(k) for k in args}
    decoder = Node(package="fsplit_ros", executable="decoder_node", name="fsplit_decoder", output="screen",
                   parameters=[arg["decoder_params"], {"backbone": arg["backbone"], "weights": arg["weights"],
                                                       "bottleneck_checkpoint": arg["bottleneck_checkpoint"],
                                                       "robot_namespaces": arg["robot_namespaces"],
                                                       "models": arg["models"],
                                                       "decoder_dir": arg["decoder_dir"]}])
    return LaunchDescription(declared + [decoder])
