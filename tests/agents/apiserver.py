"""A test apiserver that speaks list and watch as kube-apiserver does, over TLS.

It serves EndpointSlices, Services and Leases, enough for the real kubernetes_asyncio
client to run unmodified, and is shaped after what a real v1.25 apiserver did on
loopback (``shared/notes/kubernetes.md`` §2.9, §3.3):

* **list** — cluster-wide or per namespace; ``labelSelector`` (``=``, ``==``, ``!=``,
  exists, ``!``not-exists); ``fieldSelector`` on ``metadata.name``/``metadata.namespace``
  only (anything else is refused with the real message); ``limit``/``continue`` paging
  with ``remainingItemCount`` over a consistent snapshot; a ``continue`` token older than
  the compacted window gets **HTTP 410**. List items carry no ``kind``/``apiVersion``.
* **watch** — ``resourceVersion`` unset or ``"0"``: synthetic ``ADDED`` for what exists,
  then live; a specific one: replay from the event log; older than the window: one
  ``ERROR`` event with a 410 ``Expired`` Status **on HTTP 200**, then close.
  ``allowWatchBookmarks`` → ``BOOKMARK`` in the real zero-valued shape, every
  ``bookmark_interval_s`` and once ``bookmark_before_deadline_s`` before the deadline;
  with ``quiet_bookmarks=False``, as a real (v1.24-era) apiserver, none at all while the
  resource has had no event past what the watch already delivered (a quiet resource's
  watch is silent until its read timeout);
  ``timeoutSeconds`` → a clean close. A label-selected watch sees an object that stops
  matching as ``DELETED`` and one that starts matching as ``ADDED``, as the real one does.
  ``resourceVersionMatch`` on a watch → 422.
* one global, monotonic resourceVersion (as etcd's revision); ``DELETED`` carries the
  deletion's. ``history`` bounds the event log; :meth:`Store.compact` rolls the window.
* ``GET``/``POST``/``PUT``/``DELETE`` of single objects, with ``AlreadyExists`` and
  ``Conflict`` (a stale resourceVersion on ``PUT``) answered as the real server does.
* TLS with a bearer token: any other token gets 401.
* The garbage collector, on demand: :meth:`Store.owner_gone`.
* Faults on demand: :meth:`TestApiserver.expire_watches` (ERROR 410 to every open
  watch), :meth:`TestApiserver.drop_watches` (connections cut mid-stream),
  ``stalled`` (open watches go silent, bookmarks too), :meth:`TestApiserver.fail_next`
  (HTTP 500/429 with ``Retry-After``), ``down`` (an outage: every connection is cut,
  open watches and new requests alike, so clients get no answer at all) and
  ``cut_off`` (the same for the clients with these tokens only: a partition).

The test suite drives it with the Python API (``store.put``, ``store.delete``,
``store.compact``) and reads what clients asked in ``requests``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime
import ipaddress
import json
import ssl
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Key = tuple[str, str]
Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    kind: str
    api_version: str
    plural: str
    prefix: str
    zero: Obj
    """The fields a zero-valued object of this kind serialises (a BOOKMARK's body)."""

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]


RESOURCES = {
    r.plural: r
    for r in (
        Resource(
            "EndpointSlice",
            "discovery.k8s.io/v1",
            "endpointslices",
            "/apis/discovery.k8s.io/v1",
            {"addressType": "", "endpoints": None, "ports": None},
        ),
        Resource(
            "Service", "v1", "services", "/api/v1", {"spec": {}, "status": {"loadBalancer": {}}}
        ),
        Resource(
            "Lease",
            "coordination.k8s.io/v1",
            "leases",
            "/apis/coordination.k8s.io/v1",
            {"spec": {}},
        ),
    )
}


def line(event_type: str, obj: Obj) -> bytes:
    """One watch event as the apiserver frames it: compact JSON and a newline."""
    return json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode() + b"\n"


def bookmark(resource: Resource, rv: int) -> bytes:
    obj: Obj = {
        "kind": resource.kind,
        "apiVersion": resource.api_version,
        "metadata": {"resourceVersion": str(rv), "creationTimestamp": None},
        **copy.deepcopy(resource.zero),
    }
    return line("BOOKMARK", obj)


def status(code: int, reason: str, message: str, **extra: Any) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        **extra,
        "code": code,
    }


def too_old(requested: int, oldest: int) -> bytes:
    return line(
        "ERROR", status(410, "Expired", f"too old resource version: {requested} ({oldest})")
    )


# -- selectors -------------------------------------------------------------------------


def parse_selector(text: str | None) -> list[tuple[str, str, str | None]]:
    """``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k`` → (op, key, value)."""
    out: list[tuple[str, str, str | None]] = []
    for part in (p.strip() for p in (text or "").split(",") if p.strip()):
        if "!=" in part:
            k, v = part.split("!=", 1)
            out.append(("!=", k.strip(), v.strip()))
        elif "==" in part:
            k, v = part.split("==", 1)
            out.append(("=", k.strip(), v.strip()))
        elif "=" in part:
            k, v = part.split("=", 1)
            out.append(("=", k.strip(), v.strip()))
        elif part.startswith("!"):
            out.append(("!", part[1:].strip(), None))
        else:
            out.append(("exists", part, None))
    return out


def matches(selector: list[tuple[str, str, str | None]], obj: Obj) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for op, key, value in selector:
        if op == "=" and labels.get(key) != value:
            return False
        if op == "!=" and labels.get(key) == value:
            return False
        if op == "exists" and key not in labels:
            return False
        if op == "!" and key in labels:
            return False
    return True


def key_of(obj: Obj) -> Key:
    meta = obj["metadata"]
    return (meta.get("namespace", ""), meta["name"])


# -- the store -------------------------------------------------------------------------


@dataclass
class Event:
    rv: int
    type: str
    resource: str
    obj: Obj
    old: Obj | None = None


class Conflict(Exception):
    def __init__(self, body: Obj) -> None:
        super().__init__(body["message"])
        self.body = body


class NotFound(Exception):
    def __init__(self, body: Obj) -> None:
        super().__init__(body["message"])
        self.body = body


@dataclass(eq=False)
class Watcher:
    resource: str
    namespace: str | None
    selector: list[tuple[str, str, str | None]]
    queue: asyncio.Queue[tuple[str, Obj] | None] = field(default_factory=asyncio.Queue)

    def translate(self, event: Event) -> tuple[str, Obj] | None:
        if event.resource != self.resource:
            return None
        if self.namespace and key_of(event.obj)[0] != self.namespace:
            return None
        now = matches(self.selector, event.obj)
        if event.type == "ADDED":
            return ("ADDED", event.obj) if now else None
        if event.type == "DELETED":
            return ("DELETED", event.obj) if now else None
        before = event.old is not None and matches(self.selector, event.old)
        if before and now:
            return ("MODIFIED", event.obj)
        if now:
            return ("ADDED", event.obj)
        if before:
            return ("DELETED", event.obj)
        return None


class Store:
    """Every object, one global resourceVersion, and a bounded event log."""

    def __init__(self, *, history: int = 10_000, first_rv: int = 100) -> None:
        self.rv = first_rv
        self.oldest = first_rv
        """Watches may resume from any resourceVersion >= this one."""
        self.history = history
        self.objects: dict[str, dict[Key, Obj]] = {name: {} for name in RESOURCES}
        self.log: deque[Event] = deque()
        self.watchers: set[Watcher] = set()
        self.snapshots: dict[str, tuple[int, list[Obj]]] = {}
        self.gone: set[str] = set()
        """uids of owners deleted (see :meth:`owner_gone`)."""
        self.latest: dict[str, int] = {}
        """By resource: the resourceVersion of its last event (a real bookmark's)."""
        self.changed = asyncio.Event()

    # -- writing --------------------------------------------------------------------

    def _stamp(self, resource: Resource, obj: Obj, old: Obj | None) -> Obj:
        obj = copy.deepcopy(obj)
        obj["kind"], obj["apiVersion"] = resource.kind, resource.api_version
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        meta.setdefault("namespace", "default")
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        if old is None:
            meta["uid"] = meta.get("uid") or str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
        else:
            meta["uid"] = old["metadata"]["uid"]
            meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
        return obj

    def _emit(self, event: Event) -> None:
        self.latest[event.resource] = event.rv
        self.log.append(event)
        while len(self.log) > self.history:
            self.oldest = self.log.popleft().rv
        for watcher in list(self.watchers):
            translated = watcher.translate(event)
            if translated is not None:
                watcher.queue.put_nowait(translated)
        self.changed.set()

    def put(self, plural: str, obj: Obj) -> Obj:
        """Create or replace, without preconditions (what a controller's write amounts to)."""
        resource = RESOURCES[plural]
        meta = obj.get("metadata") or {}
        old = self.objects[plural].get((meta.get("namespace", "default"), meta.get("name", "")))
        stored = self._stamp(resource, obj, old)
        self.objects[plural][key_of(stored)] = stored
        self._emit(Event(self.rv, "MODIFIED" if old else "ADDED", plural, stored, old))
        return copy.deepcopy(stored)

    def create(self, plural: str, obj: Obj) -> Obj:
        resource = RESOURCES[plural]
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace", "default"), meta.get("name", ""))
        if meta.get("name") and key in self.objects[plural]:
            raise Conflict(
                status(
                    409,
                    "AlreadyExists",
                    f'{plural}.{resource.group or "core"} "{key[1]}" already exists',
                    details={"name": key[1], "group": resource.group, "kind": plural},
                )
            )
        return self.put(plural, obj)

    def replace(self, plural: str, obj: Obj) -> Obj:
        resource = RESOURCES[plural]
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace", "default"), meta.get("name", ""))
        old = self.objects[plural].get(key)
        if old is None:
            raise NotFound(self.not_found(resource, key[1]))
        wanted = meta.get("resourceVersion")
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            raise Conflict(
                status(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {plural}.{resource.group} "{key[1]}": the '
                    "object has been modified; please apply your changes to the latest version "
                    "and try again",
                    details={"name": key[1], "group": resource.group, "kind": plural},
                )
            )
        return self.put(plural, obj)

    def delete(self, plural: str, namespace: str, name: str) -> Obj | None:
        old = self.objects[plural].pop((namespace, name), None)
        if old is None:
            return None
        self.rv += 1
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self.rv)
        self._emit(Event(self.rv, "DELETED", plural, gone, old))
        return gone

    def owner_gone(self, uid: str) -> list[tuple[str, Key]]:
        """What Kubernetes' garbage collector does once the object ``uid`` is deleted (this
        server serves no Pods or Nodes, so the test says when): every object whose
        ``ownerReferences`` are all gone is deleted. Returns what was deleted."""
        self.gone.add(uid)
        collected = []
        for plural, objects in self.objects.items():
            for key, obj in list(objects.items()):
                owners = obj["metadata"].get("ownerReferences") or []
                if owners and all(o.get("uid") in self.gone for o in owners):
                    self.delete(plural, *key)
                    collected.append((plural, key))
        return collected

    def touch(self, plural: str = "leases") -> None:
        """Bump the global resourceVersion with a write elsewhere (another kind, say)."""
        self.put(plural, {"metadata": {"namespace": "kube-system", "name": "unrelated"}})

    def compact(self) -> None:
        """Forget every past event: watches from any earlier resourceVersion get 410."""
        self.log.clear()
        self.oldest = self.rv
        self.snapshots.clear()

    @staticmethod
    def not_found(resource: Resource, name: str) -> Obj:
        return status(
            404,
            "NotFound",
            f'{resource.plural}.{resource.group} "{name}" not found'
            if resource.group
            else f'{resource.plural} "{name}" not found',
            details={"name": name, "group": resource.group, "kind": resource.plural},
        )

    # -- reading --------------------------------------------------------------------

    def select(self, plural: str, namespace: str | None, selector: Any) -> list[Obj]:
        return [
            obj
            for key, obj in sorted(self.objects[plural].items())
            if (not namespace or key[0] == namespace) and matches(selector, obj)
        ]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _token(request: web.Request) -> str:
    return request.headers.get("Authorization", "").partition(" ")[2].strip()


def _bool(value: str | None) -> bool:
    return (value or "").lower() in ("1", "t", "true")


def _json(body: Obj, code: int = 200, **headers: str) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")),
        status=code,
        content_type="application/json",
        headers=headers,
    )


# -- TLS -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tls:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_tls(directory: Path) -> Tls:
    """A CA and a server certificate for 127.0.0.1 / localhost, as files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "globaldns test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    tls = Tls(directory / "ca.crt", directory / "tls.crt", directory / "tls.key")
    tls.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    tls.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return tls


# -- the HTTP server -------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]


class TestApiserver:
    __test__ = False  # not a pytest class

    def __init__(
        self,
        *,
        tokens: Iterable[str],
        history: int = 10_000,
        bookmark_interval_s: float = 60.0,
        bookmark_before_deadline_s: float = 2.0,
        default_watch_timeout_s: float = 1800.0,
        quiet_bookmarks: bool = True,
    ) -> None:
        self.tokens = set(tokens)
        self.quiet_bookmarks = quiet_bookmarks
        """False: no bookmark while the watched resource has had no new event, as a
        real apiserver (the watch cache's resourceVersion moves only with its own
        resource's events); True: a bookmark at every interval, at the global
        resourceVersion."""
        self.store = Store(history=history)
        self.bookmark_interval_s = bookmark_interval_s
        self.bookmark_before_deadline_s = bookmark_before_deadline_s
        self.default_watch_timeout_s = default_watch_timeout_s
        self.requests: list[Request] = []
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.url = ""
        self._failures: deque[tuple[int, str | None]] = deque()
        self.expire_continues = 0
        """The next this many continued lists get HTTP 410, as after etcd compaction."""
        self._open: dict[int, tuple[web.Request, Watcher]] = {}
        self._down = False
        self.cut_off: set[str] = set()
        """Tokens whose requests get no answer (see :meth:`partition`)."""

    # -- faults ---------------------------------------------------------------------

    @property
    def stalled(self) -> bool:
        """While true, open watches send nothing at all, bookmarks included."""
        return not self._flowing.is_set()

    @stalled.setter
    def stalled(self, value: bool) -> None:
        if value:
            self._flowing.clear()
        else:
            self._flowing.set()

    @property
    def down(self) -> bool:
        """While true, the apiserver answers nothing: every open watch is cut and every
        new connection is closed before an answer (what a client sees of an apiserver
        restarting behind its address)."""
        return self._down

    @down.setter
    def down(self, value: bool) -> None:
        self._down = value
        if value:
            self.drop_watches()

    def partition(self, token: str) -> None:
        """Clients with ``token`` can no longer reach the apiserver; others still can."""
        self.cut_off.add(token)
        for request, _watcher in list(self._open.values()):
            if _token(request) == token and request.transport is not None:
                request.transport.abort()

    def heal(self, token: str) -> None:
        self.cut_off.discard(token)

    def fail_next(self, code: int = 500, count: int = 1, retry_after: str | None = None) -> None:
        """The next ``count`` collection GETs (lists or watches) answer ``code``."""
        self._failures.extend([(code, retry_after)] * count)

    def expire_watches(self) -> None:
        """Every open watch gets an ERROR 410 event and is closed, as after compaction."""
        self.store.compact()
        for _request, watcher in list(self._open.values()):
            watcher.queue.put_nowait(("ERROR", {}))

    def drop_watches(self) -> None:
        """Cut every open watch's connection mid-stream (no terminating chunk)."""
        for request, _watcher in list(self._open.values()):
            if request.transport is not None:
                request.transport.abort()

    def watches(self, plural: str | None = None) -> list[Request]:
        return [
            r
            for r in self.requests
            if _bool(r.query.get("watch")) and (plural is None or r.path.endswith(plural))
        ]

    def lists(self, plural: str | None = None) -> list[Request]:
        return [
            r
            for r in self.requests
            if r.method == "GET"
            and not _bool(r.query.get("watch"))
            and (plural is None or r.path.endswith(plural))
        ]

    @property
    def open_watches(self) -> int:
        return len(self._open)

    # -- handlers -------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self._down or _token(request) in self.cut_off:
            if request.transport is not None:
                request.transport.abort()
            raise web.HTTPServiceUnavailable()  # never reaches the client: it is cut
        self.requests.append(Request(request.method, request.path, dict(request.query)))
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in self.tokens:
            return _json(status(401, "Unauthorized", "Unauthorized"), 401)
        response: web.StreamResponse = await handler(request)
        return response

    async def version(self, request: web.Request) -> web.Response:
        return _json(
            {
                "major": "1",
                "minor": "33",
                "gitVersion": "v1.33.0-globaldns-test",
                "platform": "linux/amd64",
            }
        )

    async def api_versions(self, request: web.Request) -> web.Response:
        return _json({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})

    async def api_groups(self, request: web.Request) -> web.Response:
        groups = []
        for resource in RESOURCES.values():
            if not resource.group:
                continue
            version = {"groupVersion": resource.api_version, "version": "v1"}
            groups.append(
                {"name": resource.group, "versions": [version], "preferredVersion": version}
            )
        return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})

    def _resource(self, request: web.Request) -> Resource:
        resource = RESOURCES.get(request.match_info["plural"])
        if resource is None or not request.path.startswith(resource.prefix + "/"):
            raise web.HTTPNotFound(
                text=json.dumps(status(404, "NotFound", "the server could not find the resource")),
                content_type="application/json",
            )
        return resource

    async def collection(self, request: web.Request) -> web.StreamResponse:
        resource = self._resource(request)
        if self._failures:
            code, retry_after = self._failures.popleft()
            headers = {"Retry-After": retry_after} if retry_after else {}
            return _json(
                status(code, "InternalError" if code >= 500 else "TooManyRequests", "injected"),
                code,
                **headers,
            )
        namespace = request.match_info.get("namespace")
        query = request.query
        field_selector = query.get("fieldSelector", "")
        for part in (p for p in field_selector.split(",") if p):
            name = part.split("!=")[0].split("=")[0]
            if name not in ("metadata.name", "metadata.namespace"):
                return _json(
                    status(
                        400,
                        "BadRequest",
                        f'"{name}" is not a known field selector: only "metadata.name", '
                        '"metadata.namespace"',
                    ),
                    400,
                )
        selector = parse_selector(query.get("labelSelector"))
        if _bool(query.get("watch")):
            return await self._watch(request, resource, namespace, selector)
        return self._list(resource, namespace, selector, query)

    def _list(
        self, resource: Resource, namespace: str | None, selector: Any, query: Any
    ) -> web.Response:
        store = self.store
        token = query.get("continue")
        if token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
                rv, start, snapshot_id = int(decoded["rv"]), int(decoded["start"]), decoded["id"]
            except (ValueError, KeyError, TypeError):
                return _json(status(400, "BadRequest", "continue key is not valid"), 400)
            if self.expire_continues > 0:
                self.expire_continues -= 1
                store.snapshots.pop(snapshot_id, None)
            if rv < store.oldest or snapshot_id not in store.snapshots:
                return _json(
                    status(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent "
                        "list result. You can start a new list without the continue parameter.",
                    ),
                    410,
                )
            _rv, items = store.snapshots[snapshot_id]
        else:
            rv, start, snapshot_id = store.rv, 0, uuid.uuid4().hex
            items = [copy.deepcopy(o) for o in store.select(resource.plural, namespace, selector)]
        limit = int(query.get("limit") or 0)
        page = items[start : start + limit] if limit else items[start:]
        meta: Obj = {"resourceVersion": str(rv)}
        rest = len(items) - start - len(page)
        if limit and rest > 0:
            store.snapshots[snapshot_id] = (rv, items)
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps({"rv": rv, "start": start + len(page), "id": snapshot_id}).encode()
            ).decode()
            meta["remainingItemCount"] = rest
        for obj in page:
            obj.pop("kind", None)
            obj.pop("apiVersion", None)
        return _json(
            {
                "kind": f"{resource.kind}List",
                "apiVersion": resource.api_version,
                "metadata": meta,
                "items": page,
            }
        )

    async def _watch(
        self, request: web.Request, resource: Resource, namespace: str | None, selector: Any
    ) -> web.StreamResponse:
        query = request.query
        if query.get("resourceVersionMatch"):
            return _json(status(422, "Invalid", "resourceVersionMatch is forbidden for watch"), 422)
        store = self.store
        loop = asyncio.get_running_loop()
        timeout = float(query.get("timeoutSeconds") or self.default_watch_timeout_s)
        deadline = loop.time() + timeout
        bookmarks = _bool(query.get("allowWatchBookmarks"))
        rv_param = query.get("resourceVersion", "")
        watcher = Watcher(resource.plural, namespace, selector)
        backlog: list[tuple[str, Obj]] = []
        expired: bytes | None = None
        if rv_param in ("", "0"):
            backlog = [("ADDED", o) for o in store.select(resource.plural, namespace, selector)]
        else:
            since = int(rv_param)
            if since < store.oldest:
                expired = too_old(since, store.oldest + 1 if store.log else store.rv)
            else:
                for event in store.log:
                    if event.rv > since:
                        translated = watcher.translate(event)
                        if translated is not None:
                            backlog.append(translated)
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        if expired is not None:
            await response.write(expired)
            await response.write_eof()
            return response
        store.watchers.add(watcher)
        for item in backlog:
            watcher.queue.put_nowait(item)
        ident = id(watcher)
        self._open[ident] = (request, watcher)
        last_rv = store.rv
        next_bookmark = loop.time() + self.bookmark_interval_s
        final_bookmark = deadline - self.bookmark_before_deadline_s
        sent_final = False
        try:
            while True:
                if self.stalled:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._flowing.wait(), timeout=max(0.0, deadline - loop.time())
                        )
                try:
                    item = watcher.queue.get_nowait()
                except asyncio.QueueEmpty:
                    now = loop.time()
                    if now >= deadline:
                        break
                    due = [next_bookmark] + ([final_bookmark] if not sent_final else [])
                    if bookmarks and now >= min(due):
                        # Nothing is queued, so everything up to the store's current
                        # resourceVersion has been delivered: that is the bookmark's.
                        sent_final = sent_final or now >= final_bookmark
                        next_bookmark = now + self.bookmark_interval_s
                        marked = store.rv
                        if not self.quiet_bookmarks:
                            marked = store.latest.get(resource.plural, 0)
                            if marked <= last_rv:
                                continue  # a quiet resource: the real one says nothing
                        last_rv = marked
                        await response.write(bookmark(resource, marked))
                        continue
                    wake = min([deadline, *due]) if bookmarks else deadline
                    try:
                        item = await asyncio.wait_for(watcher.queue.get(), timeout=wake - now)
                    except TimeoutError:
                        continue
                if item is None:
                    continue
                kind, obj = item
                if kind == "ERROR":
                    await response.write(too_old(last_rv, store.oldest))
                    break
                last_rv = int(obj["metadata"]["resourceVersion"])
                await response.write(line(kind, obj))
            await response.write_eof()
        except (ConnectionResetError, ConnectionError, RuntimeError):
            pass
        finally:
            store.watchers.discard(watcher)
            self._open.pop(ident, None)
        return response

    def _body_errors(self, exc: Exception) -> web.Response:
        if isinstance(exc, Conflict):
            return _json(exc.body, 409)
        assert isinstance(exc, NotFound)
        return _json(exc.body, 404)

    async def create(self, request: web.Request) -> web.Response:
        resource = self._resource(request)
        body = await request.json()
        body.setdefault("metadata", {})["namespace"] = request.match_info["namespace"]
        try:
            return _json(self.store.create(resource.plural, body), 201)
        except Conflict as exc:
            return self._body_errors(exc)

    async def read(self, request: web.Request) -> web.Response:
        resource = self._resource(request)
        key = (request.match_info["namespace"], request.match_info["name"])
        obj = self.store.objects[resource.plural].get(key)
        if obj is None:
            return _json(self.store.not_found(resource, key[1]), 404)
        return _json(obj)

    async def replace(self, request: web.Request) -> web.Response:
        resource = self._resource(request)
        body = await request.json()
        meta = body.setdefault("metadata", {})
        meta["namespace"] = request.match_info["namespace"]
        if meta.get("name") != request.match_info["name"]:
            return _json(status(400, "BadRequest", "the name of the object does not match"), 400)
        try:
            return _json(self.store.replace(resource.plural, body))
        except (Conflict, NotFound) as exc:
            return self._body_errors(exc)

    async def remove(self, request: web.Request) -> web.Response:
        resource = self._resource(request)
        gone = self.store.delete(
            resource.plural, request.match_info["namespace"], request.match_info["name"]
        )
        if gone is None:
            return _json(self.store.not_found(resource, request.match_info["name"]), 404)
        return _json(gone)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        r = app.router
        r.add_get("/version", self.version)
        r.add_get("/api", self.api_versions)
        r.add_get("/api/", self.api_versions)
        r.add_get("/apis", self.api_groups)
        r.add_get("/apis/", self.api_groups)
        for prefix in sorted({res.prefix for res in RESOURCES.values()}):
            r.add_get(prefix + "/{plural}", self.collection)
            r.add_get(prefix + "/namespaces/{namespace}/{plural}", self.collection)
            r.add_post(prefix + "/namespaces/{namespace}/{plural}", self.create)
            r.add_get(prefix + "/namespaces/{namespace}/{plural}/{name}", self.read)
            r.add_put(prefix + "/namespaces/{namespace}/{plural}/{name}", self.replace)
            r.add_delete(prefix + "/namespaces/{namespace}/{plural}/{name}", self.remove)
        return app


@contextlib.asynccontextmanager
async def running(server: TestApiserver, tls: Tls) -> AsyncIterator[TestApiserver]:
    """Serve on 127.0.0.1 over TLS on a free port; ``server.url`` is its address."""
    runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.server_context())
    await site.start()
    sockets = site._server.sockets if site._server is not None else ()  # type: ignore[union-attr]
    server.url = f"https://127.0.0.1:{sockets[0].getsockname()[1]}"
    try:
        yield server
    finally:
        server.drop_watches()
        await runner.cleanup()
