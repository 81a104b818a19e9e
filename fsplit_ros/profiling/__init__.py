"""Per-mode costs (onboard time, payload bytes, offboard time by batch size) for the link policy,
measured into a typed fsplit_ros.policy.LinkProfile."""
from fsplit_ros.profiling.profiler import cached_profile, load_profile, merge_profiles, profile_deployment

__all__ = ["cached_profile", "load_profile", "merge_profiles", "profile_deployment"]
