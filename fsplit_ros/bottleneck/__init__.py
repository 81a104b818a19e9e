"""FrankenSplit: shallow variational bottleneck injection with a factorized-prior entropy model."""
from fsplit_ros.bottleneck.checkpoint import (BottleneckCheckpointError, load_bottleneck,
                                              save_bottleneck)
from fsplit_ros.bottleneck.network import BottleneckConfig, FrankenSplitBottleneck

__all__ = ["BottleneckCheckpointError", "BottleneckConfig", "FrankenSplitBottleneck",
           "load_bottleneck", "save_bottleneck"]
