"""ModuleMesh: run model-module meshes (ONNX submodules composed by routing policies under
privacy gates) on Kubernetes, or locally with ``modulemesh run``."""

__version__ = "0.1.0"

__all__ = ["__version__"]
