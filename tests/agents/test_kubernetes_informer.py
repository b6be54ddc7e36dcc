"""The informer loop against the test apiserver, with the real client: every watch path.

Each test drives the server's store (as the EndpointSlice controller would) and checks
the informer's cache, which is all the agent ever reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import structlog.testing
from kubernetes_asyncio.client import DiscoveryV1Api

from agents.kubernetes.informer import Informer, WatchSettings
from agents.kubernetes.kubeconfig import api_client
from agents.kubernetes.objects import EndpointSlice, parse_slice
from tests.agents import k8s
from tests.agents.apiserver import TestApiserver
from tests.helpers import eventually

SELECTOR = "globaldns.io/export=true"


@contextlib.asynccontextmanager
async def informing(
    server: TestApiserver, tmp_path: Path, **settings: Any
) -> AsyncIterator[Informer[EndpointSlice]]:
    client = await api_client(kubeconfig=k8s.kubeconfig(tmp_path, server))
    async with client:
        api: Any = DiscoveryV1Api(client)
        informer: Informer[EndpointSlice] = Informer(
            "endpointslices",
            partial(api.list_endpoint_slice_for_all_namespaces, label_selector=SELECTOR),
            parse_slice,
            settings=WatchSettings(**{"backoff_s": 0.05, **settings}),
            rng=random.Random(7),
        )
        task = asyncio.create_task(informer.run())
        try:
            await asyncio.wait_for(informer.synced.wait(), 5)
            yield informer
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def addresses(informer: Informer[EndpointSlice]) -> set[str]:
    return {ep.address for s in informer.items.values() for ep in s.endpoints}


def pods(n: int, start: int = 1) -> list[k8s.Pod]:
    return [k8s.Pod(f"web-{i}", f"10.1.0.{i}") for i in range(start, start + n)]


async def test_list_then_watch_without_gaps(tmp_path: Path) -> None:
    async with k8s.apiserver(tmp_path) as server:
        svc = k8s.service("web")
        k8s.apply(server.store, svc, pods(3))
        async with informing(server, tmp_path) as informer:
            # Changes made right after the list are in the watch's replay, not lost.
            assert addresses(informer) == {"10.1.0.1", "10.1.0.2", "10.1.0.3"}
            listed_rv = informer.resource_version
            for n in range(4, 30):
                k8s.apply(server.store, svc, pods(n))
            await eventually(lambda: len(addresses(informer)) == 29)
            watches = server.watches("endpointslices")
            assert watches[0].query["resourceVersion"] == listed_rv
            assert watches[0].query["allowWatchBookmarks"] in ("True", "true", "1")
            assert informer.stats.lists == 1 and informer.stats.expired == 0
            # Not exported: filtered on the server, never seen.
            k8s.apply(server.store, k8s.service("private", export=False), pods(2, 50))
            k8s.apply(server.store, svc, pods(30))
            await eventually(lambda: len(addresses(informer)) == 30)
            assert not {"10.1.0.50", "10.1.0.51"} & addresses(informer)


async def test_resume_from_a_bookmark_after_a_clean_timeout(tmp_path: Path) -> None:
    async with k8s.apiserver(tmp_path, bookmark_before_deadline_s=0.5) as server:
        svc = k8s.service("web")
        k8s.apply(server.store, svc, pods(2))
        # timeoutSeconds is whole seconds: ~1 s watches, each ending with a bookmark.
        async with informing(server, tmp_path, timeout_s=1.0) as informer:
            slice_rv = informer.resource_version
            for _ in range(5):
                server.store.touch()  # other objects move the global resourceVersion
            await eventually(lambda: informer.stats.bookmarks >= 1)
            assert informer.resource_version != slice_rv
            # The history before the bookmark is compacted away: resuming from the
            # slice's own resourceVersion would now be a 410 and a relist.
            server.store.compact()
            await eventually(lambda: len(server.watches("endpointslices")) >= 2)
            k8s.apply(server.store, svc, pods(3))
            await eventually(lambda: "10.1.0.3" in addresses(informer))
            assert informer.stats.expired == 0 and informer.stats.lists == 1
            second = server.watches("endpointslices")[1]
            assert second.query["resourceVersion"] != slice_rv


async def test_410_relists_and_removes_what_was_deleted_meanwhile(tmp_path: Path) -> None:
    async with k8s.apiserver(tmp_path) as server:
        web, api = k8s.service("web"), k8s.service("api")
        k8s.apply(server.store, web, pods(2))
        k8s.apply(server.store, api, [k8s.Pod("api-1", "10.2.0.1")])
        async with informing(server, tmp_path) as informer:
            assert "10.2.0.1" in addresses(informer)
            server.stalled = True  # the watch hears nothing while things change
            for name, obj in list(server.store.objects["endpointslices"].items()):
                if obj["metadata"]["labels"]["kubernetes.io/service-name"] == "api":
                    server.store.delete("endpointslices", *name)
            k8s.apply(server.store, web, pods(3))
            server.expire_watches()  # the window rolled past the watch: ERROR 410
            server.stalled = False
            await eventually(lambda: informer.stats.expired == 1)
            await eventually(lambda: addresses(informer) == {"10.1.0.1", "10.1.0.2", "10.1.0.3"})
            assert informer.stats.lists == 2


async def test_http_410_on_a_watch_also_relists(tmp_path: Path) -> None:
    async with k8s.apiserver(tmp_path) as server:
        k8s.apply(server.store, k8s.service("web"), pods(1))
        async with informing(server, tmp_path) as informer:
            server.fail_next(410)
            server.drop_watches()
            await eventually(lambda: informer.stats.lists == 2)
            assert informer.stats.expired == 1


async def test_dropped_connections_and_errors_back_off_and_rewatch(tmp_path: Path) -> None:
    async with k8s.apiserver(tmp_path) as server:
        svc = k8s.service("web")
        k8s.apply(server.store, svc, pods(1))
        async with informing(server, tmp_path) as informer:
            await eventually(lambda: server.open_watches == 1)
            server.fail_next(500, count=2)
            server.fail_next(429, retry_after="1")
            server.drop_watches()
            k8s.apply(server.store, svc, pods(2))
            await eventually(lambda: "10.1.0.2" in addresses(informer))
            assert informer.stats.longest_backoff_s >= 1.0  # Retry-After honoured
            assert informer.stats.errors == 4  # the cut stream, 500, 500, 429
            assert informer.stats.lists == 1  # re-watched from where it was, no relist


async def test_a_silent_watch_is_ended_by_the_read_timeout(tmp_path: Path) -> None:
    async with k8s.apiserver(tmp_path) as server:
        svc = k8s.service("web")
        k8s.apply(server.store, svc, pods(1))
        async with informing(server, tmp_path, read_timeout_s=0.5) as informer:
            await eventually(lambda: server.open_watches == 1)
            server.stalled = True
            k8s.apply(server.store, svc, pods(2))
            await eventually(lambda: informer.stats.quiet >= 1)
            server.stalled = False
            await eventually(lambda: "10.1.0.2" in addresses(informer))
            assert informer.stats.lists == 1
            assert informer.stats.errors == 0  # silence is watched again, not an error


async def test_a_quiet_watch_without_bookmarks_is_normal(tmp_path: Path) -> None:
    """A real apiserver sends no bookmark on a resource without events: the read
    timeout ends such a watch, and that is no error: watched again from where it was."""
    quiet = {"quiet_bookmarks": False, "bookmark_interval_s": 0.1}
    with structlog.testing.capture_logs() as logs:
        async with k8s.apiserver(tmp_path, **quiet) as server:
            svc = k8s.service("web")
            k8s.apply(server.store, svc, pods(1))
            async with informing(server, tmp_path, read_timeout_s=0.5) as informer:
                listed_rv = informer.resource_version
                await eventually(lambda: informer.stats.quiet >= 2)
                assert informer.stats.bookmarks == 0  # the server said nothing at all
                watches = server.watches("endpointslices")
                assert {w.query["resourceVersion"] for w in watches} == {listed_rv}
                k8s.apply(server.store, svc, pods(2))
                await eventually(lambda: "10.1.0.2" in addresses(informer))
                assert informer.stats.errors == 0 and informer.stats.lists == 1
    loud = [e for e in logs if e["log_level"] in ("warning", "error", "critical")]
    assert loud == []


async def test_a_dropped_watch_resumes_from_the_last_resource_version_received(
    tmp_path: Path,
) -> None:
    async with k8s.apiserver(tmp_path, bookmark_interval_s=0.2) as server:
        svc = k8s.service("web")
        k8s.apply(server.store, svc, pods(1))
        async with informing(server, tmp_path) as informer:
            listed_rv = informer.resource_version
            # Events move the resourceVersion; then everything before it is compacted
            # away, so resuming from the listed one would be a 410 and a relist.
            k8s.apply(server.store, svc, pods(5))
            await eventually(lambda: informer.resource_version == str(server.store.rv))
            server.store.compact()
            server.drop_watches()
            k8s.apply(server.store, svc, pods(6))
            await eventually(lambda: "10.1.0.6" in addresses(informer))
            assert server.watches("endpointslices")[1].query["resourceVersion"] != listed_rv
            # Bookmarks move it too: other resources' writes, then the same again.
            for _ in range(3):
                server.store.touch()
            await eventually(lambda: informer.resource_version == str(server.store.rv))
            assert informer.stats.bookmarks >= 1
            server.store.compact()
            server.drop_watches()
            k8s.apply(server.store, svc, pods(7))
            await eventually(lambda: "10.1.0.7" in addresses(informer))
            assert informer.stats.errors == 2  # the two cut streams
            assert informer.stats.expired == 0 and informer.stats.lists == 1


async def test_paged_list_and_an_expired_continue_token(tmp_path: Path) -> None:
    async with k8s.apiserver(tmp_path) as server:
        k8s.apply(server.store, k8s.service("web"), pods(25), max_per_slice=2)
        server.expire_continues = 1
        async with informing(server, tmp_path, page_size=5) as informer:
            assert len(addresses(informer)) == 25
            pages = server.lists("endpointslices")
            # page 1, its continuation refused with HTTP 410, then a fresh list: 1 + 3
            assert len(pages) == 5 and "continue" not in pages[2].query
            assert informer.stats.expired == 1 and informer.stats.lists == 1


async def test_back_from_an_apiserver_outage_the_informer_relists_and_is_fresh(
    tmp_path: Path,
) -> None:
    """One dropped connection is resumed (above); when the retry cannot reach the
    apiserver either, it was down: the informer is stale until a list makes it whole."""
    async with k8s.apiserver(tmp_path) as server:
        svc = k8s.service("web")
        k8s.apply(server.store, svc, pods(2))
        async with informing(server, tmp_path) as informer:
            assert informer.stale_since is None
            server.down = True
            await eventually(lambda: informer.stats.errors >= 2)
            assert informer.stale_since is not None
            k8s.apply(server.store, svc, pods(1))  # a pod goes while nobody can see
            server.down = False
            informer.poke()
            await eventually(lambda: informer.stale_since is None)
            assert informer.stats.lists == 2
            assert addresses(informer) == {"10.1.0.1"}
