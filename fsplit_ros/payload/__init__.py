"""The self-describing payload every mode sends, and its typed errors."""
from fsplit_ros.payload.errors import (CorruptPayload, ForeignPayload, ModelMismatch, OversizedPayload,
                                       PayloadError, RefusedMode, ShapeMismatch, TruncatedPayload,
                                       UnknownCodec, UnsupportedVersion)
from fsplit_ros.payload.format import (CODECS, DTYPES, MODES, Limits, PayloadHeader, pack_payload,
                                       unpack_payload)

__all__ = ["CODECS", "DTYPES", "MODES", "CorruptPayload", "ForeignPayload", "Limits", "ModelMismatch",
           "OversizedPayload", "PayloadError", "PayloadHeader", "RefusedMode", "ShapeMismatch", "TruncatedPayload",
           "UnknownCodec", "UnsupportedVersion", "pack_payload", "unpack_payload"]
