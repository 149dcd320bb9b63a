"""Loopback stand-ins of the remote APIs the deploy targets talk to (no cluster, no cloud here).

- :class:`FakeKubernetesApi`: the few Kubernetes API routes the apply and the rollout wait use, in memory;
  the real ``kubernetes`` client (through the cncf.kubernetes ``KubernetesHook``) talks to it over HTTP.
- :class:`FakeBentoCloud`: ``GET /api/v2/deployments/<name>`` of BentoCloud's REST API; the real
  ``BentoCloudClient`` talks to it over HTTP.
- :class:`DelayedEndpoint`: a bento-like endpoint (``/readyz``, ``/health``) that starts listening after a
  delay and answers ``/readyz`` 503 a few times before 200.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _JsonHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class FakeKubernetesApi:
    """The few Kubernetes API routes the apply uses, in memory (GET/POST/PATCH on namespaced objects)."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        #: statuses the Deployment reports before it is rolled out, one per status read, in order; once
        #: empty: rolled out (``{"stuck": True}`` reports a ProgressDeadlineExceeded condition)
        self.pending: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict[str, Any]:
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n) or b"{}")

            def do_GET(self) -> None:  # noqa: N802
                fake.calls.append(("GET", self.path))
                path = self.path.split("?")[0]
                status = path.endswith("/status")
                obj = fake.objects.get(path.removesuffix("/status"))
                if obj is None:
                    self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                    return
                if status:
                    n = obj["spec"].get("replicas", 1)
                    st: dict[str, Any] = {"observedGeneration": 1, "replicas": n, "updatedReplicas": n,
                                          "availableReplicas": n, "readyReplicas": n}
                    if fake.pending:
                        step = fake.pending.pop(0)
                        st = {"observedGeneration": 1, "replicas": n + 1, "updatedReplicas": step.get("updated", 1),
                              "availableReplicas": n - 1}
                        if step.get("stuck"):
                            st["conditions"] = [{"type": "Progressing", "status": "False",
                                                 "reason": "ProgressDeadlineExceeded",
                                                 "message": "ReplicaSet has timed out progressing."}]
                    obj = {**obj, "metadata": {**obj["metadata"], "generation": 1}, "status": st}
                self._send(200, obj)

            def do_POST(self) -> None:  # noqa: N802
                fake.calls.append(("POST", self.path))
                body = self._body()
                fake.objects[f"{self.path.split('?')[0]}/{body['metadata']['name']}"] = body
                self._send(201, body)

            def do_PATCH(self) -> None:  # noqa: N802
                fake.calls.append(("PATCH", self.path))
                fake.objects[self.path.split("?")[0]] = self._body()
                self._send(200, fake.objects[self.path.split("?")[0]])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


_USER = {"name": "ci", "email": "ci@example.invalid", "first_name": "", "last_name": ""}
_T0 = "2026-01-01T00:00:00Z"


class FakeBentoCloud:
    """BentoCloud's ``GET /api/v2/deployments/<name>``: ``statuses`` are reported in order (the last repeats)."""

    def __init__(self, statuses: list[str], url: str | None = "https://fd.example.bentoml.ai") -> None:
        self.statuses = list(statuses)
        self.url = url
        self.calls: list[tuple[str, str | None]] = []
        fake = self

        class Handler(_JsonHandler):
            def do_GET(self) -> None:  # noqa: N802
                fake.calls.append((self.path, self.headers.get("X-YATAI-API-TOKEN")))
                name = self.path.split("?")[0].rsplit("/", 1)[-1]
                status = fake.statuses.pop(0) if len(fake.statuses) > 1 else fake.statuses[0]
                ready = status == "running"
                self._send(200, {
                    "uid": "d1", "created_at": _T0, "updated_at": None, "deleted_at": None, "name": name,
                    "resource_type": "deployment", "labels": [], "status": status, "kube_namespace": "ns",
                    "creator": _USER, "latest_revision": None, "urls": [fake.url] if ready and fake.url else [],
                    "cluster": {"uid": "c1", "created_at": _T0, "updated_at": None, "deleted_at": None,
                                "name": "gcp-us", "resource_type": "cluster", "labels": [], "description": "",
                                "organization_name": "ci", "creator": _USER},
                })

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DelayedEndpoint:
    """Listens on ``port`` only after ``delay`` seconds; ``/readyz`` is 503 for the first ``not_ready`` probes.

    ``POST /health`` reports ``bento_tag``. ``readyz_calls`` counts the probes it answered.
    """

    def __init__(self, bento_tag: str, *, delay: float = 1.0, not_ready: int = 2) -> None:
        self.bento_tag = bento_tag
        self.not_ready = not_ready
        self.readyz_calls = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.httpd: ThreadingHTTPServer | None = None
        fake = self

        class Handler(_JsonHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path != "/readyz":
                    self._send(404, {})
                    return
                fake.readyz_calls += 1
                self._send(503 if fake.readyz_calls <= fake.not_ready else 200, {})

            def do_POST(self) -> None:  # noqa: N802
                self._send(200 if self.path == "/health" else 404,
                           {"status": "ok", "bento_tag": fake.bento_tag, "model_version": "3"})

        def start() -> None:
            time.sleep(delay)
            self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
            self.httpd.serve_forever()

        threading.Thread(target=start, daemon=True).start()

    def close(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
