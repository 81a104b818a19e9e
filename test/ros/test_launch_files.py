"""Launch files and parameter files, checked as far as a machine without `launch` allows: they
parse, every executable they start is installed, every parameter file they load exists and holds
only parameters the node declares (with the same defaults), and every node's parameter is in its
YAML. Where launch_ros is installed, the launch descriptions are also built for real."""
import ast
import importlib
import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SHARE = Path(os.environ.get("FSPLIT_INSTALL", REPO / ".ws" / "install")) / "fsplit_ros" / "share" / "fsplit_ros"
LIB = SHARE.parent.parent / "lib" / "fsplit_ros"
NODE_MODULES = {
    "encoder_node": ("fsplit_ros.nodes.encoder_node", "fsplit_encoder", "encoder.yaml"),
    "decoder_node": ("fsplit_ros.nodes.decoder_node", "fsplit_decoder", "decoder.yaml"),
    "link_monitor_node": ("fsplit_ros.nodes.link_monitor_node", "fsplit_link_monitor", "link_monitor.yaml"),
    "video_source_node": ("fsplit_ros.nodes.video_source_node", "fsplit_video_source", "video_source.yaml"),
}
LAUNCH_FILES = ["robot.launch.py", "edge.launch.py", "demo.launch.py"]


def _node_calls(path: Path) -> list[dict]:
    """Keyword arguments (literals only) of every Node(...) call in a launch file."""
    calls = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Node":
            kw = {k.arg: k.value for k in node.keywords}
            calls.append({k: ast.literal_eval(v) for k, v in kw.items() if isinstance(v, ast.Constant)}
                         | {"_remap_sources": [ast.literal_eval(e.elts[0]) for e in getattr(kw.get("remappings"), "elts", [])
                                               if isinstance(e, ast.Tuple) and isinstance(e.elts[0], ast.Constant)]})
    return calls


@pytest.mark.parametrize("launch_file", LAUNCH_FILES)
def test_launch_file_is_installed_and_names_real_executables(launch_file):
    installed = SHARE / "launch" / launch_file
    assert installed.is_file(), f"{launch_file} is not installed to share/fsplit_ros/launch"
    for call in _node_calls(installed):
        assert call["package"] == "fsplit_ros"
        exe = LIB / call["executable"]
        assert exe.is_file() and os.access(exe, os.X_OK), f"{launch_file}: {exe} not an installed executable"
        module, node_name, _ = NODE_MODULES[call["executable"]]
        assert call["name"] == node_name, f"{launch_file}: node name {call['name']} != {node_name}"
        # The remapped topic really is a topic the node uses.
        source = Path(importlib.import_module(module).__file__).read_text()
        for topic in call["_remap_sources"]:
            assert f'"{topic}"' in source, f"{launch_file} remaps '{topic}', which {module} never uses"


@pytest.mark.parametrize("executable", sorted(NODE_MODULES))
def test_parameter_file_matches_declared_parameters(executable):
    module_name, node_name, yaml_name = NODE_MODULES[executable]
    declared = {p.name: p.default for p in importlib.import_module(module_name).PARAMETERS}
    for where in (REPO / "config" / yaml_name, SHARE / "config" / yaml_name):
        params = yaml.safe_load(where.read_text())[node_name]["ros__parameters"]
        assert set(params) == set(declared), (f"{where}: undeclared {set(params) - set(declared)}, "
                                              f"missing {set(declared) - set(params)}")
        for name, value in params.items():
            assert value == declared[name], f"{where}: {name}={value!r}, the node's default is {declared[name]!r}"


def test_launch_arguments_reach_declared_parameters():
    """Launch-argument overrides name parameters the nodes declare."""
    for launch_file in LAUNCH_FILES:
        tree = ast.parse((REPO / "launch" / launch_file).read_text())
        for call in [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "Node"]:
            kw = {k.arg: k.value for k in call.keywords}
            exe = ast.literal_eval(kw["executable"])
            declared = {p.name for p in importlib.import_module(NODE_MODULES[exe][0]).PARAMETERS}
            for item in kw["parameters"].elts:
                if isinstance(item, ast.Dict):
                    for key in item.keys:
                        assert ast.literal_eval(key) in declared, f"{launch_file}: {exe} has no parameter {key.value}"


def test_launch_descriptions_build_with_launch_ros():
    launch_ros = pytest.importorskip("launch_ros", reason="launch_ros is not installed here (not on PyPI); "
                                                          "the static checks above cover the launch files")
    from launch_ros.actions import Node
    for launch_file, executables in (("robot.launch.py", {"encoder_node", "link_monitor_node"}),
                                     ("edge.launch.py", {"decoder_node"})):
        spec = importlib.util.spec_from_file_location("lf", SHARE / "launch" / launch_file)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        nodes = [e for e in mod.generate_launch_description().entities if isinstance(e, Node)]
        assert {n.node_executable for n in nodes} == executables, (launch_file, launch_ros)


def _launch_graph() -> dict:
    """side -> {executable: (remapped topic sources, parameter names set in the launch file)}, read
    from the Node(...) calls of robot.launch.py (robot), edge.launch.py (edge) and the camera of
    demo.launch.py (robot)."""
    graph = {"robot": {}, "edge": {}}
    for launch_file, side, only in (("robot.launch.py", "robot", None), ("edge.launch.py", "edge", None),
                                    ("demo.launch.py", "robot", {"video_source_node"})):
        tree = ast.parse((REPO / "launch" / launch_file).read_text())
        for call in [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "Node"]:
            kw = {k.arg: k.value for k in call.keywords}
            exe = ast.literal_eval(kw["executable"])
            if only and exe not in only:
                continue
            remaps = {ast.literal_eval(e.elts[0]) for e in getattr(kw.get("remappings"), "elts", [])}
            params = {ast.literal_eval(k) for item in kw["parameters"].elts if isinstance(item, ast.Dict)
                      for k in item.keys}
            graph[side][exe] = (remaps, params)
    return graph


class _RecordingGraph:
    """Stands in for ProcessGraph.start: records what start_standard_graph would run, where."""

    def __init__(self):
        self.started = {"robot": {}, "edge": {}}

    def start(self, tag, executable, side="robot", params=None, remaps=None, namespace="", argv=None):
        self.started[side][executable] = (set(remaps or {}), set(params or {}))


def test_launch_files_and_process_graph_wire_the_same_graph(tmp_path):
    """The demo, benchmarks and tests run the graph through process_graph (no `ros2 launch` here);
    users run the launch files. Same executables on the same side, the same topics remapped, and
    every model parameter (launch_support.MODEL_PARAMETERS) reaching every model node in both."""
    from fsplit_ros.launch_support import MODEL_PARAMETERS, SHARED_MODEL_PARAMETERS
    from fsplit_ros.process_graph import GraphConfig, start_standard_graph
    recorded = _RecordingGraph()
    start_standard_graph(recorded, GraphConfig(), tmp_path / "events.jsonl")
    launched = _launch_graph()
    ours = {side: {exe: v for exe, v in nodes.items() if exe != "recorder_node"}   # the demo's own recorder
            for side, nodes in recorded.started.items()}
    assert {s: set(n) for s, n in ours.items()} == {s: set(n) for s, n in launched.items()} == {
        "robot": {"encoder_node", "link_monitor_node", "video_source_node"}, "edge": {"decoder_node"}}
    for side, nodes in launched.items():
        for exe, (remaps, params) in nodes.items():
            assert remaps == ours[side][exe][0], f"{exe}: launch remaps {remaps}, process_graph {ours[side][exe][0]}"
            if exe != "video_source_node":
                assert set(MODEL_PARAMETERS) <= params, f"{exe} in the launch files lacks {set(MODEL_PARAMETERS) - params}"
                assert set(MODEL_PARAMETERS) <= ours[side][exe][1], f"{exe} in process_graph lacks a model parameter"
            if exe in ("decoder_node", "link_monitor_node"):   # runs / times the further edge models
                assert set(SHARED_MODEL_PARAMETERS) <= params, f"{exe} in the launch files lacks models/decoder_dir"
                assert set(SHARED_MODEL_PARAMETERS) <= ours[side][exe][1], f"{exe} in process_graph lacks models/decoder_dir"


@pytest.mark.parametrize("launch_file", ["robot.launch.py", "demo.launch.py"])
def test_launch_files_that_carry_camera_frames_load_the_large_frame_dds_profile(launch_file):
    """The camera driver and the encoder share the robot's launch; both need the larger Fast DDS
    shared-memory segment (see config/fastdds_large_frames.xml and test_transport)."""
    tree = ast.parse((SHARE / "launch" / launch_file).read_text())
    [returned] = [n for n in ast.walk(tree) if isinstance(n, ast.Return)]
    assert isinstance(returned.value, ast.Call) and returned.value.func.id == "LaunchDescription"
    # LaunchDescription(a + b + ...): the profile's actions must come before the first node, or the
    # processes start without the variable
    operands, expr = [], returned.value.args[0]
    while isinstance(expr, ast.BinOp):
        operands.insert(0, expr.right)
        expr = expr.left
    operands.insert(0, expr)
    calls = [o.func.id if isinstance(o, ast.Call) else None for o in operands]
    assert "large_frame_dds_profile" in calls, f"{launch_file} does not add large_frame_dds_profile(...)"
    first_node = next(i for i, o in enumerate(operands) if isinstance(o, ast.List))
    assert calls.index("large_frame_dds_profile") < first_node, \
        f"{launch_file} adds the DDS profile after its nodes: they would start without it"


def test_the_dds_profile_goes_in_the_one_variable_the_distributions_fast_dds_reads():
    from fsplit_ros.launch_support import dds_profile_variable
    assert dds_profile_variable("jazzy") == dds_profile_variable("humble") == "FASTRTPS_DEFAULT_PROFILES_FILE"
    assert dds_profile_variable("kilted") == dds_profile_variable("rolling") == "FASTDDS_DEFAULT_PROFILES_FILE"
    assert dds_profile_variable("") == "FASTDDS_DEFAULT_PROFILES_FILE"          # newer than we know


def test_large_frame_dds_profile_is_installed_with_a_big_shared_memory_segment():
    import xml.etree.ElementTree as ET
    root = ET.parse(SHARE / "config" / "fastdds_large_frames.xml").getroot()
    ns = {"d": "http://www.eprosima.com"}
    sizes = [int(e.text) for e in root.iterfind(".//d:transport_descriptor/d:segment_size", ns)]
    assert sizes and min(sizes) >= 8 * 1024 * 1024, sizes   # a 1080p rgb8 frame is 6.2 MB
    transports = [e.text for e in root.iterfind(".//d:transport_descriptor/d:type", ns)]
    assert transports == ["SHM", "UDPv4"], "robot <-> edge traffic must still be able to use UDP"
