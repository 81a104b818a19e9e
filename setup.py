"""pip installation of the ROS-free core (models, splitting, codecs, payload, policy, training,
evaluation). ROS 2 users build the package with colcon instead (CMakeLists.txt), which also
generates the messages and installs the node executables."""
from setuptools import find_packages, setup

setup(
    name="fsplit_ros",
    version="0.1.0",
    description="Split perception over bad wireless links: FrankenSplit bottlenecks and "
    "dynamic split computing for ROS 2 robots",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["fsplit_ros", "fsplit_ros.*"]),
    package_data={"fsplit_ros": ["weights/*.pt", "weights/*.json", "profiling/fidelity/*.json"]},
    install_requires=[
        "numpy",
        "torch>=2.1",
        "torchvision",
        "timm>=1.0",
        "compressai>=1.2.8",
        "opencv-python-headless",
        "pyyaml",
        "tqdm",
        "matplotlib",
        "pycocotools",   # fidelity mAP of the detection task
    ],
    extras_require={"bags": ["rosbags>=0.10"], "test": ["pytest", "hypothesis"]},
    entry_points={
        "console_scripts": [
            "fsplit-profile=fsplit_ros.cli.profile:main",
            "fsplit-train=fsplit_ros.cli.train:main",
            "fsplit-data=fsplit_ros.cli.data:main",
            "fsplit-eval=fsplit_ros.cli.evaluate:main",
            "fsplit-eval-bag=fsplit_ros.cli.eval_bag:main",
        ],
    },
)
