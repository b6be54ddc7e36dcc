"""Turning registry and resolver JSON into text for people (the CLI's output)."""

from __future__ import annotations

from typing import Any


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def impact(body: dict[str, Any]) -> str:
    lines = []
    for item in body.get("impact", []):
        where = ", ".join(f"{a} -> {b or 'nowhere'}" for a, b in item["clients_go_to"].items())
        left = ", ".join(item["remaining"]) or "NOTHING"
        mark = "  STRANDED" if item["stranded"] else ""
        lines.append(
            f"  {item['service']}: loses {', '.join(item['loses'])}; still served by {left}; "
            f"clients {where}{mark}"
        )
    return "\n".join(lines) or "  no service loses a healthy cluster"


def status(clusters: dict[str, Any], drains: dict[str, Any], services: dict[str, Any]) -> str:
    rows = []
    for c in clusters["clusters"]:
        age = "-" if c["lease_age_s"] is None else f"{c['lease_age_s']:.1f}s"
        fresh = "" if c["lease_fresh"] else " (stale)"
        counts = f"{c['endpoints']['healthy']}/{c['endpoints']['total']}"
        rows.append([c["name"], c["region"], c["state"], age + fresh, counts])
    out = ["Clusters", table(rows, ["cluster", "region", "state", "lease", "healthy"])]
    if drains["drains"]:
        out += ["", "Drains"]
        out.append(
            table(
                [
                    [d["cluster"], d["by"] or "-", str(d["at_ms"]), d["reason"] or "-"]
                    for d in drains["drains"]
                ],
                ["cluster", "by", "at_ms", "reason"],
            )
        )
    service_rows: list[list[str]] = []
    for s in services["services"]:
        per_cluster: dict[str, list[int]] = {}
        for e in s["endpoints"]:
            tally = per_cluster.setdefault(e["cluster"], [0, 0])
            tally[0] += e["healthy"]
            tally[1] += 1
        spread = " ".join(f"{c}:{h}/{t}" for c, (h, t) in sorted(per_cluster.items()))
        service_rows.append([f"{s['namespace']}/{s['name']}", s["policy"]["kind"], spread])
    out += ["", "Services", table(service_rows, ["service", "policy", "healthy per cluster"])]
    problems: dict[tuple[str, str, str], None] = {}
    for part in (clusters, drains, services):
        for p in part.get("problems", ()):
            problems[(p["key"], p["field"] or "-", p["why"])] = None
    if problems:
        out += ["", "Unreadable in Redis (skipped; the rest is shown)"]
        out.append(table([list(p) for p in problems], ["key", "field", "why"]))
    return "\n".join(out)


def explain(report: dict[str, Any]) -> str:
    lines = [f"{report['name']} {report['type']} for {report['client']}"]
    if "location" not in report:
        lines.append(f"  {report['rcode']}: {report.get('reason', '')}")
        return "\n".join(lines)
    loc = report["location"]
    lines += [
        f"  located:  {loc['address']} via {loc['source']} -> region {loc['region']}"
        + (f", cluster {loc['cluster']}" if loc["cluster"] else "")
        + (f", jurisdiction {loc['jurisdiction']}" if loc["jurisdiction"] else ""),
        f"  policy:   {report['policy']['kind']} ({report['policy_source']})",
        f"  order:    {' > '.join(report['region_order'])}",
    ]
    for step in report["trace"][1:]:
        lines.append(f"  {step}")
    for c in report["candidates"]:
        verdict = "chosen" if c["chosen"] else ("healthy" if c["healthy"] else "unhealthy")
        why = f" ({'; '.join(c['reasons'])})" if c["reasons"] else ""
        lines.append(f"    {c['address']:<40} {c['cluster']:<20} {verdict}{why}")
    lines += [
        f"  decision: {report['reason']}",
        f"  answer:   {', '.join(report['answer']) or 'NODATA'}"
        f"  (ttl {report['ttl']}s, generation {report['generation']})",
    ]
    return "\n".join(lines)
