"""Natural-bottleneck splitting (Dynamic Split Computing): split points, c_l, head and tail."""
from fsplit_ros.splitting.split_points import (SplitPoint, SplittableModel, UnsupportedModel,
                                               compressive_bottlenecks)

__all__ = ["SplitPoint", "SplittableModel", "UnsupportedModel", "compressive_bottlenecks"]
