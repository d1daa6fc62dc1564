"""Apps that cannot choose a Host header reach mesh services: through a service's own port on
the caller's sidecar (`outbound_port`), and through the outbound port as an HTTP proxy
(`HTTP_PROXY`, absolute-form requests such as `GET http://reviews:9080/`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

from harness.mesh import MeshEnv
from harness.wait import wait_for
from meshes import reviews_mesh, start_reviews_mesh

PORT = 9080  # reviews' port, and where the caller's sidecar listens for it
REVIEWS_BY_PORT = reviews_mesh(0, 100).replace(
    "  reviews:\n    port: 9080\n", "  reviews:\n    port: 9080\n    outbound_port: true\n"
)


def fetch(url: str) -> tuple[int, Any]:
    """GET `url` as a plain urllib app would: no Host of our own (and no proxy)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, None


def test_a_service_is_reached_at_its_port_on_the_callers_sidecar(mesh_env: MeshEnv) -> None:
    assert "outbound_port: true" in REVIEWS_BY_PORT
    page, _, _ = start_reviews_mesh(mesh_env, REVIEWS_BY_PORT)
    url = f"http://{page.ip}:{PORT}/details/1"
    wait_for(lambda: fetch(url)[0] == 200, 10, message="reviews by port", ignore=(OSError,))
    answers = [fetch(url) for _ in range(10)]
    assert {status for status, _ in answers} == {200}
    # The route's split applies (all to v2), and the app saw the Host urllib sent, not a name.
    assert {body["version"] for _, body in answers} == {"v2"}
    assert {body["headers"]["host"] for _, body in answers} == {f"{page.ip}:{PORT}"}


# An app that knows only `http://reviews:9080/...` and honours HTTP_PROXY, as most HTTP clients do.
APP = """
import json, sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as answer:
        print(answer.status, json.loads(answer.read())["version"], answer.url)
except urllib.error.HTTPError as err:
    print(err.code)
"""


def app_calls(url: str, proxy: str) -> str:
    env = {**os.environ, "HTTP_PROXY": proxy, "http_proxy": proxy}
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    done = subprocess.run(
        [sys.executable, "-c", APP, url], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_outbound_port_is_an_http_proxy_for_absolute_uris(mesh_env: MeshEnv) -> None:
    page, _, _ = start_reviews_mesh(mesh_env, reviews_mesh(0, 100))
    proxy = f"http://{page.ip}:15001"
    url = f"http://reviews:{PORT}/details/1"
    assert app_calls(url, proxy) == f"200 v2 {url}"  # routed by the URI's host, split applied
    assert app_calls("http://no-such-service:9080/", proxy) == "404"
