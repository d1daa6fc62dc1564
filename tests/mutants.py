"""`make mutants`: break critical lines on purpose and check that some test turns red.

Each mutant replaces one exact snippet of src/ (which must occur exactly once, so a refactor that
moves the line makes this script fail loudly instead of silently testing nothing) in a copy of
the repository, runs the tests named for it there, and expects them to fail. A mutant that
leaves its tests green means those tests cannot catch that bug.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_TIMEOUT_S = 300


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # under src/meshpilot
    original: str
    mutated: str
    tests: tuple[str, ...]  # pytest node ids or files, relative to the repository


ADS = "tests/test_ads.py"
PERMITS = "tests/test_ads_sharing.py"
STUCK = "tests/test_ads_stuck.py"
DELTA = "tests/test_ads_delta.py"
SNAPSHOT = "tests/test_snapshot.py"
TRANSLATOR = "tests/test_translate.py"
FILTERS = "tests/test_http_filters.py"
JWT = "tests/test_jwt.py"
CERTIFICATES = "tests/test_identity_service.py"
AGENT = "tests/test_identity_client.py"
ADS_AUTH = "tests/test_ads_auth.py"
INCREMENTAL = "tests/test_incremental.py"
LOCALITY = "tests/test_locality.py"
REPLICAS = "tests/test_replicas.py"
STORE = "tests/test_store.py"
HISTORY = "tests/test_history.py"

MUTANTS = (
    Mutant(
        "stale-nonce-accepted",
        "xds/sotw/stream.py",
        "if request.response_nonce != state.nonce:",
        "if False:",
        (ADS,),
    ),
    Mutant(
        "nack-taken-for-ack",
        "xds/sotw/stream.py",
        'if request.HasField("error_detail"):',
        "if False:",
        (ADS,),
    ),
    Mutant(
        "ack-not-recorded",
        "xds/protocol.py",
        "        self.acked = self.sent\n",
        "        self.acked = self.acked\n",
        (ADS,),
    ),
    Mutant(
        "nack-not-recorded",
        "xds/protocol.py",
        "self.nacked_version = self.sent_version",
        "self.nacked_version = None",
        (ADS,),
    ),
    Mutant(
        "no-make-before-break",
        "xds/sotw/stream.py",
        "if BY_URL[type_url].gated and self._gated and not self._dependencies_acked(desired):",
        "if False:",
        (ADS,),
    ),
    Mutant(
        "push-permits-unbounded",
        "xds/server.py",
        "            await self._semaphore.acquire()",
        "            pass",
        (PERMITS,),
    ),
    Mutant(
        "permit-kept-by-a-silent-proxy",
        "xds/server.py",
        "self.release()\n            self.proven = False",
        "self.proven = False",
        (PERMITS,),
    ),
    Mutant(
        "delta-stale-nonce-taken-for-an-ack",
        "xds/delta/stream.py",
        "if request.response_nonce and request.response_nonce == state.nonce:",
        "if request.response_nonce:",
        (DELTA,),
    ),
    Mutant(
        "delta-updated-cluster-left-warming",
        "xds/delta/stream.py",
        "                self._endpoints_again_for(updated, state.acked)",
        "                pass",
        (DELTA,),
    ),
    Mutant(
        "unproven-streams-share-the-proven-pool",
        "xds/server.py",
        "self._pools = {True: proven, False: unproven}",
        "self._pools = {True: proven, False: proven}",
        (STUCK,),
    ),
    Mutant(
        "no-write-deadline",
        "xds/server.py",
        "    if not done:\n        raise _Stuck(",
        "    if False:\n        raise _Stuck(",
        (STUCK,),
    ),
    Mutant(
        "no-answer-deadline",
        "xds/server.py",
        "if self._answer_by is not None and time.monotonic() >= self._answer_by:",
        "if False:",
        (STUCK,),
    ),
    Mutant(
        "peer-streams-not-counted",
        "xds/peers.py",
        "self._open[key] += 1",
        "pass",
        (STUCK,),
    ),
    Mutant(
        "other-replicas-instances-not-served",
        "xds/cache.py",
        "{w.instance for w in watches if w.instance is not None}.union(others)",
        "{w.instance for w in watches if w.instance is not None}",
        (REPLICAS,),
    ),
    Mutant(
        "registry-drops-locality",
        "store/etcd.py",
        '"locality": None if locality is None else str(locality),',
        '"locality": None,',
        (STORE,),
    ),
    Mutant(
        "history-commit-ignores-a-concurrent-append",
        "store/memory.py",
        "if len(self._versions) != version.number - 1:",
        "if False:",
        (HISTORY,),
    ),
    Mutant(
        "history-stores-the-current-content-again",
        "store/base.py",
        "if current is not None and current.digest == digest:",
        "if False:",
        (HISTORY,),
    ),
    Mutant(
        "consistency-not-checked-when-served",
        "xds/cache.py",
        "made.append((watch, view, consistency.snapshot(view, watch.snapshot)))",
        "made.append((watch, view, Snapshot(view)))",
        (SNAPSHOT,),
    ),
    Mutant(
        "dangling-reference-let-through",
        "xds/snapshot.py",
        "            if self._missing(split, type_):",
        "            if False:",
        (SNAPSHOT,),
    ),
    Mutant(
        "a-type-not-checked-again-when-only-what-it-refers-to-changed",
        "xds/snapshot.py",
        "urls = (type_.url, *type_.refers_to)",
        "urls = (type_.url,)",
        (SNAPSHOT,),
    ),
    Mutant(
        "weights-below-100-accepted",
        "mesh/references.py",
        "sum(ints) != 100:",
        "sum(ints) > 100:",
        ("tests/test_mesh_load.py",),
    ),
    Mutant(
        "split-weights-not-carried",
        "translator/envoy/route.py",
        "weight=wrappers_pb2.UInt32Value(value=d.weight)",
        "weight=wrappers_pb2.UInt32Value(value=1)",
        (TRANSLATOR,),
    ),
    Mutant(
        "allow-before-deny",
        "translator/envoy/http_filters.py",
        "    rbac.DENY,\n    rbac.ALLOW,\n",
        "    rbac.ALLOW,\n    rbac.DENY,\n",
        (FILTERS,),
    ),
    Mutant(
        "custom-hook-after-static-policies",
        "translator/envoy/http_filters.py",
        "    ext_authz.FILTER,\n    rbac.DENY,\n",
        "    rbac.DENY,\n    ext_authz.FILTER,\n",
        (FILTERS,),
    ),
    Mutant(
        "csr-signed-for-an-unverified-token",
        "identity/admission.py",
        "return identity.tokens.verify(token)",
        'return __import__("meshpilot.identity.tokens").identity.tokens.read_token(token)',
        (CERTIFICATES, ADS_AUTH),
    ),
    Mutant(
        "control-plane-trusted-without-the-pin",
        "identity/tls.py",
        "if certificate_fingerprint(certificate) == fingerprint:",
        "if True:",
        (AGENT,),
    ),
    Mutant(
        "caller-accepts-any-mesh-certificate-for-the-service-it-calls",
        "translator/envoy/mtls.py",
        "common_tls_context=_common_context(string_pb2.StringMatcher(exact=spiffe_id), alpn)",
        'common_tls_context=_common_context(string_pb2.StringMatcher(prefix="spiffe://"), alpn)',
        ("tests/test_golden.py",),
    ),
    Mutant(
        "sidecar-joins-with-labels-its-token-does-not-grant",
        "identity/admission.py",
        "if dict(proxy.labels) != dict(grant.labels):",
        "if False:",
        (ADS_AUTH,),
    ),
    Mutant(
        "delta-push-found-before-a-request-sent-after-it",
        "xds/delta/stream.py",
        "        self._found = None\n        state = self._types.get(request.type_url)",
        "        state = self._types.get(request.type_url)",
        (DELTA,),
    ),
    Mutant(
        "incremental-read-skips-cross-checks",
        "mesh/incremental.py",
        "if cross_checks(data, Path(filename).parent):",
        "if False:",
        (INCREMENTAL,),
    ),
    Mutant(
        "delta-changes-not-found-in-the-proxys-own-part",
        "translator/resources.py",
        "return [r for r in (*from_base, *self.part.resources) if _differs(r, other)]",
        "return [r for r in from_base if _differs(r, other)]",
        (TRANSLATOR,),
    ),
    Mutant(
        "callers-locality-ignored",
        "translator/shared.py",
        "if caller is None or not calls.by_caller:",
        "if True:",
        (LOCALITY,),
    ),
    Mutant(
        "same-zone-other-subzone-as-near-as-the-callers-own",
        "model/locality.py",
        "return 0 if where.subzone == caller.subzone else 1",
        "return 0",
        (LOCALITY,),
    ),
    Mutant(
        "distribute-weights-ignored-by-envoy",
        "translator/envoy/cluster.py",
        "if distributes(policy.load_balancer):",
        "if False:",
        (LOCALITY,),
    ),
    Mutant(
        "tokens-verified-after-the-policies-that-read-them",
        "translator/envoy/http_filters.py",
        "    jwt_authn.FILTER,\n    rbac.AUDIT,\n",
        "    rbac.AUDIT,\n    jwt_authn.FILTER,\n",
        (FILTERS,),
    ),
    Mutant(
        "a-request-without-a-token-refused",
        "translator/envoy/jwt_authn.py",
        "requirements.append(config_pb2.JwtRequirement(allow_missing=empty_pb2.Empty()))",
        "empty_pb2.Empty()",
        (JWT,),
    ),
    Mutant(
        "a-claim-in-a-list-not-matched-by-hooks",
        "model/match.py",
        "return any(v in rule.values for v in value)",
        "return False",
        (JWT,),
    ),
)


def apply(tree: Path, mutant: Mutant) -> None:
    target = tree / "src" / "meshpilot" / mutant.path
    text = target.read_text()
    count = text.count(mutant.original)
    if count != 1:
        raise SystemExit(f"{mutant.name}: the snippet occurs {count} times in {mutant.path}")
    target.write_text(text.replace(mutant.original, mutant.mutated))


def copy_tree(into: Path) -> Path:
    tree = into / "repo"
    ignore = shutil.ignore_patterns(".venv", ".git", "__pycache__", ".pytest_cache", "*.egg-info")
    shutil.copytree(ROOT, tree, ignore=ignore)
    return tree


def killed(tree: Path, mutant: Mutant) -> tuple[bool, str]:
    """Run the mutant's tests on the mutated copy: (some test failed, pytest's last line)."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *mutant.tests]
    done = subprocess.run(
        command, cwd=tree, env=env, capture_output=True, text=True, timeout=TEST_TIMEOUT_S
    )
    lines = done.stdout.strip().splitlines()
    last = lines[-1] if lines else done.stderr.strip()[-200:]
    return done.returncode == 1, last


def check_unmutated(into: Path) -> None:
    """The copy imports its own src, and every test named here passes before any mutation."""
    tree = copy_tree(into / "unmutated")
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    where = subprocess.run(
        [sys.executable, "-c", "import meshpilot; print(meshpilot.__file__)"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not where.startswith(str(tree)):
        raise SystemExit(f"the copy imports meshpilot from {where}, not from its own src")
    tests = sorted({t for m in MUTANTS for t in m.tests})
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=TEST_TIMEOUT_S,
    )
    if done.returncode != 0:
        raise SystemExit(f"the tests fail before any mutation:\n{done.stdout[-2000:]}")
    shutil.rmtree(tree)


def main() -> int:
    survivors = []
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        check_unmutated(Path(tmp))
        for mutant in MUTANTS:
            tree = copy_tree(Path(tmp) / mutant.name)
            apply(tree, mutant)
            started = time.monotonic()
            red, last = killed(tree, mutant)
            took = time.monotonic() - started
            print(f"{'killed  ' if red else 'SURVIVED'} {mutant.name} ({took:.1f} s): {last}")
            if not red:
                survivors.append(mutant.name)
            shutil.rmtree(tree)
    print(f"{len(MUTANTS) - len(survivors)} killed, {len(survivors)} survived")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
