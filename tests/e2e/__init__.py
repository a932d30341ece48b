"""End-to-end tests against the local Kubernetes control plane (hack/cluster)."""
