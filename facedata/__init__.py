"""facedata: turn raw 4D face captures (Multiface layout) into validated, memory-mappable training stores."""

__version__ = "0.1.0"
