"""Custom policies in the mixer: for a checked request, run the hooks of the policies it matches.

Static allow/deny policies never reach the mixer: Envoy's RBAC filter enforces them.
"""

from __future__ import annotations

from collections import defaultdict

from meshpilot.model import ir
from meshpilot.model.match import policy_matches
from meshpilot.policy.decision import ALLOW, Decision, Request
from meshpilot.policy.pool import HookPool

DEFAULT_HOOK_TIMEOUT_S = 0.2


class CustomPolicies:
    def __init__(self, pool: HookPool | None = None) -> None:
        self.pool = pool or HookPool()
        self._by_service: dict[str, list[ir.Policy]] = {}
        self.hook_timeout = DEFAULT_HOOK_TIMEOUT_S
        self.trust_domain: str | None = None  # callers' identities; None: no caller is known

    def update(self, mesh: ir.MeshIR) -> None:
        by_service: dict[str, list[ir.Policy]] = defaultdict(list)
        for policy in mesh.policies:
            if policy.action == "custom":
                by_service[policy.service].append(policy)
        self._by_service = dict(by_service)
        self.trust_domain = mesh.trust_domain
        if mesh.mixer is not None:
            self.hook_timeout = mesh.mixer.timeout_ms / 2000  # leave the sidecar time to hear back

    async def decide(self, request: Request) -> Decision:
        """The first matching policy whose hook denies decides; otherwise allow, with the headers
        every allowing hook added."""
        added: dict[str, str] = {}
        for policy in self._by_service.get(request.destination, ()):
            if not policy_matches(
                policy,
                request.source,
                request.method,
                request.path,
                request.headers,
                request.claims,
            ):
                continue
            assert policy.hook is not None
            decision = await self.pool.decide(policy.hook, request, self.hook_timeout)
            if not decision.allow:
                return decision
            added.update(decision.headers)
        return Decision(True, headers=added) if added else ALLOW
