"""Typed payload errors. Every one is a ValueError whose message tells the operator what is wrong
and what to do; the decoder logs it, counts it, answers with feedback and drops the frame."""

# Every kind of rejection and its number on the wire (FrameFeedback.error_kind; msg/FrameFeedback.msg
# spells the same numbers as ERROR_<KIND> constants, a test holds them equal). The robot acts on the
# number, never on the edge's prose.
ERROR_KINDS = {"none": 0, "invalid": 1, "truncated": 2, "foreign": 3, "version": 4, "codec": 5,
               "oversized": 6, "corrupt": 7, "model_mismatch": 8, "shape": 9, "refused": 10,
               "metadata": 11, "internal": 12}
ERROR_KIND_NAMES = {number: kind for kind, number in ERROR_KINDS.items()}


class PayloadError(ValueError):
    """Base class: the payload cannot be decoded and must be dropped."""
    kind = "invalid"


class TruncatedPayload(PayloadError):
    kind = "truncated"


class ForeignPayload(PayloadError):
    """Not an fsplit payload at all (wrong magic)."""
    kind = "foreign"


class UnsupportedVersion(PayloadError):
    kind = "version"


class UnknownCodec(PayloadError):
    """Unknown mode, codec or dtype id, or a combination that makes no sense."""
    kind = "codec"


class OversizedPayload(PayloadError):
    """Declares sizes beyond the configured limits (would allocate too much)."""
    kind = "oversized"


class CorruptPayload(PayloadError):
    """Checksum mismatch or a body that does not decode."""
    kind = "corrupt"


class ModelMismatch(PayloadError):
    """Encoded for other weights/tables than the ones loaded here."""
    kind = "model_mismatch"


class ShapeMismatch(PayloadError):
    """Well-formed, but the tensor does not fit the model at that split point."""
    kind = "shape"


class RefusedMode(PayloadError):
    """Well-formed, but this end is configured to refuse the mode (e.g. allow_image_mode=false:
    no pixels may be processed here)."""
    kind = "refused"
