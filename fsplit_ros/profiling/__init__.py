"""Per-mode costs (onboard time, payload bytes, offboard time by batch size) for the link policy."""
from fsplit_ros.profiling.profiler import (cached_profile, load_profile, merge_profiles, profile_deployment,
                                            save_profile)

__all__ = ["cached_profile", "load_profile", "merge_profiles", "profile_deployment", "save_profile"]
