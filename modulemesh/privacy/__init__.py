"""Privacy classification shared by the router and the sidecar: which compliance tags a request
carries, from its headers and from its content. Imports only :mod:`modulemesh.api`,
:mod:`modulemesh.headers` and the codec :mod:`modulemesh.oip`, never a component."""

from modulemesh.privacy.classify import Classifier, HeaderRule, declared_tags
from modulemesh.privacy.redact import ContentScanner, Finding, Inspection

__all__ = ["Classifier", "ContentScanner", "Finding", "HeaderRule", "Inspection", "declared_tags"]
