"""The agents: per-cluster reporters that turn what a cluster knows into registry reports.

A source (:mod:`agents.source`) says which services and endpoints exist
(:mod:`agents.static` reads a YAML file; :mod:`agents.kubernetes` watches the exported
Services' EndpointSlices, as a DaemonSet), active probes say which of them answer
(:mod:`agents.probe_state` decides, :mod:`agents.probe` dials), and :mod:`agents.agent`
reports the whole state to the registry API, renews the cluster's lease with heartbeats
and sends everything again whenever the registry may have lost it. Agents hold no Redis
credentials: a per-cluster token for the registry API is all they have.
"""
