"""The ROS-free core installs with plain pip and imports without ROS.

A clean venv gets `pip install --no-deps .`; the heavy ML dependencies come from this environment
through a .pth file (instead of a second 5 GB torch install), and a meta-path hook makes every
ROS import (rclpy, *_msgs, rosidl*, cv_bridge, fsplit_ros.msg/nodes) fail, so any ROS import in
the core would break the imports below."""
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE_MODULES = ["fsplit_ros", "fsplit_ros.payload", "fsplit_ros.codecs", "fsplit_ros.models",
                "fsplit_ros.splitting", "fsplit_ros.bottleneck", "fsplit_ros.runtime", "fsplit_ros.policy",
                "fsplit_ros.profiling", "fsplit_ros.imaging", "fsplit_ros.linkemu", "fsplit_ros.process_graph",
                "fsplit_ros.evaluation.bag_types", "fsplit_ros.evaluation.bag_report",
                "fsplit_ros.evaluation.rate_accuracy", "fsplit_ros.cli.profile", "fsplit_ros.cli.eval_bag",
                "fsplit_ros.cli.evaluate", "fsplit_ros.demo", "fsplit_ros.detection",
                "fsplit_ros.evaluation.detection_frames", "fsplit_ros.tasks", "fsplit_ros.launch_support",
                "fsplit_ros.runtime.shared_models", "fsplit_ros.training.shared_decoder"]
BLOCKER = textwrap.dedent("""
    import sys
    class BlockRos:
        ROS = ("rclpy", "rosidl", "rcl_interfaces", "builtin_interfaces", "std_msgs", "sensor_msgs",
               "vision_msgs", "diagnostic_msgs", "cv_bridge", "fsplit_ros.msg", "fsplit_ros.nodes")
        def find_spec(self, name, path=None, target=None):
            if name.startswith(self.ROS):
                raise ImportError(f"ROS import in the core: {name}")
    sys.meta_path.insert(0, BlockRos())
""")


@pytest.mark.slow
def test_pip_install_core_in_clean_venv_imports_without_ros(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps",
                              str(REPO)], capture_output=True, text=True, cwd=tmp_path)
    assert install.returncode == 0, install.stderr[-3000:]
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "zz_project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    script = BLOCKER + textwrap.dedent(f"""
        import importlib, fsplit_ros
        assert "{venv}" in fsplit_ros.__file__, fsplit_ros.__file__   # the pip-installed copy
        for name in {CORE_MODULES!r}:
            importlib.import_module(name)
        try:
            import rclpy
        except ImportError:
            print("core imported; ROS blocked")
    """)
    run = subprocess.run([str(py), "-c", script], capture_output=True, text=True, cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "core imported; ROS blocked" in run.stdout
