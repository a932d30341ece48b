"""The operator: kopf handlers (``handlers``), the pure render of a graph into Kubernetes objects
(``render``), status computation (``observe``, ``conditions``) and the reconcile loop.

Import-light on purpose: importing ``modulemesh.operator`` does not import kopf, so render and
status logic can be used (and tested) without the operator running.
"""
