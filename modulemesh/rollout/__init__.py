"""Progressive delivery of module versions: canary analysis, traffic steps, capture and replay.

Imports ``modulemesh.api`` and leaf helpers only; the router and ``modulemesh run`` import it.
"""
