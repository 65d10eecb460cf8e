"""meshtalk: the MeshTalk model (Richard et al., ICCV 2021) with a trainer over facedata stores."""

__version__ = "0.1.0"
