"""A custom policy hook for the golden case (never run by the golden tests)."""

from meshpilot.policy import Request


def check(request: Request) -> bool:
    return request.headers.get("x-user") != "mallory"
