"""Thin rclpy shells around the ROS-free core. The only modules that import ROS.
Each node module has a PARAMETERS table (name, default, description, limits) that config/*.yaml
mirrors, and a main() that `ros2 run fsplit_ros <node>` calls."""
