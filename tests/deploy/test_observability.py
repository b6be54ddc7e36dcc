"""deploy/observability/: the alert rules pass `promtool check rules` and their unit tests,
every dashboard expression parses, and every metric they name is exported by a real
registry and resolver (scraped here), whose expositions pass `promtool check metrics`."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import aiohttp
import yaml

from tests.conftest import require_tool
from tests.deploy.render import DEPLOY
from tests.helpers import TOKENS, registry, resolver

OBSERVABILITY = DEPLOY / "observability"
METRIC = re.compile(r"\b(globaldns_[a-z_]+)")


def rule_expressions() -> list[str]:
    rules = yaml.safe_load((OBSERVABILITY / "rules.yaml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((OBSERVABILITY / "dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=OBSERVABILITY,
    )


def test_the_rules_pass_promtool_and_their_unit_tests() -> None:
    checked = promtool("check", "rules", "rules.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "rules_test.yaml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    # promtool parses PromQL in rule files: each panel query as a recording rule.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:panel_{i}", "expr": expr}
                    for i, expr in enumerate(dashboard_expressions())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def exported_names(exposition: str) -> set[str]:
    return set(re.findall(r"^# TYPE (\S+) \S+$", exposition, re.M))


async def test_every_metric_named_is_exported_and_well_named(redis_url: str) -> None:
    async with (
        registry(redis_url) as api,
        resolver(redis_url) as bound,
        aiohttp.ClientSession() as session,
    ):
        headers = {"Authorization": f"Bearer {TOKENS['us-east-prod']}"}
        async with session.post(
            f"{api}/v1/reports", json={"seq": 1, "services": []}, headers=headers
        ) as r:
            assert r.status == 200
        texts = []
        for url in (f"{api}/metrics", f"http://127.0.0.1:{bound.http_port}/metrics"):
            async with session.get(url) as r:
                assert r.status == 200
                texts.append(await r.text())
    for text in texts:
        linted = promtool("check", "metrics", stdin=text)
        assert linted.returncode == 0 and not linted.stdout.strip(), linted.stdout
    exported = exported_names("\n".join(texts))
    named = {
        m for expr in rule_expressions() + dashboard_expressions() for m in METRIC.findall(expr)
    }
    assert named
    for metric in named:
        base = re.sub(r"_(bucket|count|sum)$", "", metric)
        assert metric in exported or base in exported, f"{metric} is not exported"
