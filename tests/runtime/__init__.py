"""Tests of the module runtime (modulemesh.runtime) and the OIP codec."""
