"""Natural-bottleneck splitting (Dynamic Split Computing): split points, c_l, head and tail."""
from fsplit_ros.splitting.split_points import (SplitPoint, SplittableModel, UnsupportedModel,
                                               compressive_bottlenecks, map_stride)

__all__ = ["SplitPoint", "SplittableModel", "UnsupportedModel", "compressive_bottlenecks", "map_stride"]
