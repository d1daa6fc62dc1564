"""Synthetic meshes for scale tests and benchmarks: one generator, so that the benchmarks and the
tests measure and check the same shape of mesh.

Every service `svc-<i>` (port 8000 + i % 1000) has two subsets, a canary route that splits
between them (v1 90 %, v2 10 % unless told otherwise) and two static endpoints,
172.16.<i // 250>.<i % 250 + 1> (v1) and 172.17.<same> (v2). Services added after the first
`services` ones are named and numbered by the caller and follow them in the address plan.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

V1_WEIGHT = 90


def service_name(index: int) -> str:
    return f"svc-{index}"


def service_names(services: int) -> list[str]:
    return [service_name(i) for i in range(services)]


def service_port(index: int) -> int:
    """The port of service `index`."""
    return 8000 + index % 1000


def ring_callees(index: int, services: int, egress: int) -> list[int]:
    """With scoping, service `index` calls the `egress` services after it (in a ring of
    `services`; never itself)."""
    return [(index + k) % services for k in range(1, min(egress, services - 1) + 1)]


def ring_egress(services: int, egress: int) -> Callable[[int], list[str]]:
    """`mesh_yaml`'s `egress` for scoping by `ring_callees`."""
    return lambda index: [service_name(j) for j in ring_callees(index, services, egress)]


def mesh_yaml(
    services: int,
    *,
    name: str = "synthetic",
    added: Sequence[tuple[str, int]] = (),
    egress: Callable[[int], Sequence[str]] | None = None,
    v1_weights: Mapping[int, int] | None = None,
    defaults: str = "",
) -> str:
    """`services` services `svc-0`... then the `added` (name, port) ones, as a mesh file.

    `egress(i)`: the services that service `i` (one of the first `services`) calls, written as
    its `egress:` (None: no scoping, every service calls every other); `v1_weights`: the v1
    weight of the canary route by service index (others: 90); `defaults`: a YAML flow mapping
    for the mesh's `defaults:`."""
    lines = [f"mesh: {name}"]
    if defaults:
        lines.append(f"defaults: {defaults}")
    lines.append("services:")
    entries = [(service_name(i), service_port(i)) for i in range(services)] + list(added)
    weights = v1_weights or {}
    for i, (service, port) in enumerate(entries):
        weight = weights.get(i, V1_WEIGHT)
        lines += [f"  {service}:", f"    port: {port}"]
        if egress is not None and i < services:
            lines.append(f"    egress: [{', '.join(egress(i))}]")
        lines += [
            "    subsets: {v1: {version: v1}, v2: {version: v2}}",
            "    endpoints:",
            f"      - {{address: 172.16.{i // 250 % 250}.{i % 250 + 1}, port: 8080, "
            "labels: {version: v1}}",
            f"      - {{address: 172.17.{i // 250 % 250}.{i % 250 + 1}, port: 8080, "
            "labels: {version: v2}}",
            "    routes:",
            "      - name: canary",
            f"        to: [{{subset: v1, weight: {weight}}}, "
            f"{{subset: v2, weight: {100 - weight}}}]",
        ]
    return "\n".join(lines) + "\n"
