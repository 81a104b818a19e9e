"""Link policy (ROS-free): estimate the link, predict each mode's latency, choose with hysteresis."""
from fsplit_ros.policy.cost_model import CostModel, Prediction
from fsplit_ros.policy.flow_control import InFlightWindow
from fsplit_ros.policy.link_estimator import LinkEstimator
from fsplit_ros.policy.link_profile import CandidateProfile, LinkProfile, ProfileError
from fsplit_ros.policy.probing import LinkProber
from fsplit_ros.policy.time_correction import MeasuredTimeCorrection
from fsplit_ros.modes import candidate_mode, candidate_name
from fsplit_ros.policy.selector import DEFAULT_MIN_FIDELITY, Decision, ModeSelector, faithful, preferred_modes

__all__ = ["DEFAULT_MIN_FIDELITY", "faithful", "CandidateProfile", "CostModel", "LinkProfile", "ProfileError", "Decision", "InFlightWindow", "LinkEstimator", "MeasuredTimeCorrection", "ModeSelector", "Prediction", "LinkProber", "candidate_mode",
           "candidate_name", "preferred_modes"]
