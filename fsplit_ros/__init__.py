"""fsplit_ros: split perception for robots on bad wireless links.

The package is a ROS-free core (``models``, ``splitting``, ``bottleneck``, ``codecs``,
``payload``, ``policy``, ``profiling``, ``training``, ``evaluation``) with thin ROS 2 shells in
``nodes``. Only ``nodes`` and ``ros_*`` modules import rclpy.
"""
import pkgutil

# The generated messages (fsplit_ros.msg) live in the colcon install tree, while a developer may
# import the rest from the source tree: let the package span both so ``fsplit_ros.msg`` resolves.
__path__ = pkgutil.extend_path(__path__, __name__)

__version__ = "0.1.0"
