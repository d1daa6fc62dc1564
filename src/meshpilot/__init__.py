"""meshpilot: a service-mesh control plane that drives real Envoy sidecars."""

__version__ = "0.1.0"
