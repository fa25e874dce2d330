"""Cluster specs, manifests, security rules and the backends that run them."""
