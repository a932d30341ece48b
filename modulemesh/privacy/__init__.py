"""Privacy classification shared by the router and the sidecar: which compliance tags a request
carries. Imports only :mod:`modulemesh.api` and :mod:`modulemesh.headers`, never a component."""

from modulemesh.privacy.classify import Classifier, HeaderRule, declared_tags

__all__ = ["Classifier", "HeaderRule", "declared_tags"]
