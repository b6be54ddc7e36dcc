"""The test apiserver against the real kubernetes_asyncio client, over TLS with a token.

Its BOOKMARK and ERROR lines are checked byte for byte against what a real apiserver
sent (``shared/notes/kubernetes.md`` §2.9), so tests built on it test the real protocol.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client import CoordinationV1Api, DiscoveryV1Api
from kubernetes_asyncio.client.exceptions import ApiException

from agents.kubernetes.kubeconfig import api_client
from tests.agents import k8s
from tests.agents.apiserver import RESOURCES, TestApiserver, bookmark, too_old

REAL_BOOKMARK = (
    b'{"type":"BOOKMARK","object":{"kind":"EndpointSlice","apiVersion":"discovery.k8s.io/v1",'
    b'"metadata":{"resourceVersion":"647","creationTimestamp":null},"addressType":"",'
    b'"endpoints":null,"ports":null}}\n'
)
REAL_410 = (
    b'{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},'
    b'"status":"Failure","message":"too old resource version: 196 (354)","reason":"Expired",'
    b'"code":410}}\n'
)


def test_bookmark_and_expiry_lines_are_the_real_bytes() -> None:
    assert bookmark(RESOURCES["endpointslices"], 647) == REAL_BOOKMARK
    assert too_old(196, 354) == REAL_410


async def in_cluster(server: TestApiserver, tmp_path: Path, token: str | None = None) -> Any:
    token_file = tmp_path / "token"
    token_file.write_text(token or server.token)  # type: ignore[attr-defined]
    port = server.url.rsplit(":", 1)[1]
    return await api_client(
        environ={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port},
        token_file=token_file,
        ca_file=server.tls.ca,  # type: ignore[attr-defined]
    )


async def test_in_cluster_config_lists_pages_and_watches(tmp_path: Path) -> None:
    async with k8s.apiserver(tmp_path) as server:
        svc = k8s.service("api")
        pods = [k8s.Pod(f"api-{i}", f"10.1.0.{i}") for i in range(1, 6)]
        k8s.apply(server.store, svc, pods, max_per_slice=2)
        async with await in_cluster(server, tmp_path) as client:
            assert client.configuration.refresh_api_key_hook is not None  # token rotation
            api = DiscoveryV1Api(client)
            first = await api.list_endpoint_slice_for_all_namespaces(
                label_selector="globaldns.io/export=true", limit=2
            )
            assert len(first.items) == 2
            assert first.metadata.remaining_item_count == 1
            second = await api.list_endpoint_slice_for_all_namespaces(
                label_selector="globaldns.io/export=true",
                limit=2,
                _continue=first.metadata._continue,
            )
            assert len(second.items) == 1
            assert second.metadata.resource_version == first.metadata.resource_version
            rv = first.metadata.resource_version

            server.store.delete("endpointslices", "production", first.items[0].metadata.name)
            response = await api.list_endpoint_slice_for_all_namespaces(
                watch=True,
                resource_version=rv,
                allow_watch_bookmarks=True,
                timeout_seconds=1,
                _preload_content=False,
            )
            lines = [json.loads(line) async for line in response.content]
            response.release()
            assert [e["type"] for e in lines] == ["DELETED", "BOOKMARK"]
            assert int(lines[0]["object"]["metadata"]["resourceVersion"]) > int(rv)


async def test_a_wrong_token_is_refused_and_tls_is_verified(tmp_path: Path) -> None:
    async with (
        k8s.apiserver(tmp_path) as server,
        await in_cluster(server, tmp_path, token="not-the-token") as client,
    ):
        with pytest.raises(ApiException) as caught:
            await DiscoveryV1Api(client).list_endpoint_slice_for_all_namespaces()
        assert caught.value.status == 401


async def test_expired_resource_version_is_an_error_event_on_a_200_stream(
    tmp_path: Path,
) -> None:
    async with k8s.apiserver(tmp_path) as server:
        k8s.apply(server.store, k8s.service("api"), [k8s.Pod("api-1", "10.1.0.1")])
        async with await in_cluster(server, tmp_path) as client:
            api = DiscoveryV1Api(client)
            listed = await api.list_endpoint_slice_for_all_namespaces()
            server.store.touch()
            server.store.compact()
            response = await api.list_endpoint_slice_for_all_namespaces(
                watch=True,
                resource_version=listed.metadata.resource_version,
                _preload_content=False,
            )
            assert response.status == 200
            body = await response.read()
            response.release()
            event = json.loads(body)
            assert event["type"] == "ERROR"
            assert event["object"]["code"] == 410
            assert event["object"]["reason"] == "Expired"


async def test_leases_create_conflict_and_replace(tmp_path: Path) -> None:
    async with k8s.apiserver(tmp_path) as server, await in_cluster(server, tmp_path) as client:
        api = CoordinationV1Api(client)
        body = {
            "metadata": {"name": "l", "namespace": "globaldns"},
            "spec": {"holderIdentity": "a"},
        }
        created = await api.create_namespaced_lease("globaldns", body)
        with pytest.raises(ApiException) as exists:
            await api.create_namespaced_lease("globaldns", body)
        assert exists.value.status == 409
        stale = {**body, "metadata": {**body["metadata"], "resourceVersion": "1"}}
        with pytest.raises(ApiException) as conflict:
            await api.replace_namespaced_lease("l", "globaldns", stale)
        assert conflict.value.status == 409
        fresh = {
            **body,
            "metadata": {
                **body["metadata"],
                "resourceVersion": created.metadata.resource_version,
            },
            "spec": {"holderIdentity": "b"},
        }
        replaced = await api.replace_namespaced_lease("l", "globaldns", fresh)
        assert replaced.spec.holder_identity == "b"
        with pytest.raises(ApiException) as missing:
            await api.read_namespaced_lease("nope", "globaldns")
        assert missing.value.status == 404
