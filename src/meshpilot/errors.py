"""One exception tree: anything user-facing is a MeshpilotError, printed without a traceback."""


class MeshpilotError(Exception):
    """Base of every error meshpilot reports to a user."""


class EnvoyNotFound(MeshpilotError):
    """No Envoy binary could be located."""


class InconsistentSnapshot(MeshpilotError):
    """A snapshot references a resource it does not contain; it must not be published."""
