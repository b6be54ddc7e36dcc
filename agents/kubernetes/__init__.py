"""The Kubernetes source: exported Services' EndpointSlices, as a DaemonSet.

Every agent pod watches the exported Services and their EndpointSlices (list, then watch
from the list's resourceVersion: :mod:`.informer`), translates the raw JSON once into
slim types (:mod:`.objects`, :mod:`.annotations`) and keeps the cluster's picture.

Who does what (:mod:`.source` composes it)::

    every pod:   probe the endpoints on its own node (NODE_NAME)   ─┐ verdicts in its
                 renew its node Lease every node_lease_s / 3          ├▶ node Lease
    the leader:  (one per cluster, a coordination.k8s.io Lease)      │
                 probe endpoints without a node                     ◀┘
                 fold every node's verdicts into the picture; a node whose Lease
                 expired has its endpoints marked unhealthy
                 report the whole picture to the registry (agents.agent)

The decisions are pure functions over plain data: merging slices and the condition table
(:mod:`.merge`), which endpoints a pod probes (:mod:`.sharding`), lease expiry and who
leads (:mod:`.election`). The I/O shells around them are :mod:`.informer`,
:mod:`.leases`, :mod:`.kubeconfig` and :mod:`.main`.
"""
