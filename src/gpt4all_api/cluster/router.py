"""`PrefixAffinityRouter`: Ray Serve's request-router extension point with the policy of
`prefix.choose`. It runs in the process holding the DeploymentHandle (the ingress), reads the
`RoutingKey` each call carries as its first argument, and records each text for the replica
Ray reports it sent (or ran) it on.

A replica's load is its ongoing requests as Ray's queue-length cache knows them, else the
engine's own gauges (`waiting + running`) from the replica's `record_routing_stats`.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from .keys import RoutingKey
from .prefix import PrefixIndex, choose, ranked

log = logging.getLogger(__name__)


def key_of(request: PendingRequest | None) -> RoutingKey | None:
    if request is None or not request.args or not isinstance(request.args[0], RoutingKey):
        return None
    return request.args[0]


class PrefixAffinityRouter(RequestRouter):
    # Ray probes the chosen replica's queue length before sending, and passes over a replica
    # that does not answer in time. A replica busy prefilling on a loaded machine can take
    # longer than Ray's default 0.1 s to answer, and a pass-over sends the next turn to a cold
    # cache: wait longer for the replica the prefix chose.
    queue_len_response_deadline_s = 1.0
    max_queue_len_response_deadline_s = 5.0

    def initialize_state(
        self,
        imbalance: float = 4,
        block: int = 64,
        capacity: int = 200_000,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.imbalance = imbalance
        self.index = PrefixIndex(block=block, capacity=capacity)
        self.rng = random.Random(seed)
        self.matched = 0  # requests routed by a prefix match (for logs and tests)
        self._texts: dict[str, str] = {}  # new prefixes, by request, until Ray says where

    def _load(self, replica: RunningReplica) -> float:
        cached = self.replica_queue_len_cache.get(replica.replica_id)
        if cached is not None:
            return float(cached)
        stats = replica.routing_stats or {}
        return float(stats.get("waiting", 0)) + float(stats.get("running", 0))

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        by_id = {r.replica_id: r for r in candidate_replicas}
        key = key_of(pending_request)
        if key is not None and key.replica:
            pinned = [r for rid, r in by_id.items() if rid.to_full_id_str() == key.replica]
            if pinned:
                return [pinned]
        loads = {rid: self._load(r) for rid, r in by_id.items()}
        order, matched = choose(
            self.index, key.text if key else None, loads, imbalance=self.imbalance, rng=self.rng
        )
        if matched:
            self.matched += 1
        if key is not None and key.text and pending_request is not None:
            # recorded for the replica Ray reports it sent the request to
            self._texts[pending_request.metadata.internal_request_id] = key.text
            while len(self._texts) > 10_000:  # requests never reported
                del self._texts[next(iter(self._texts))]
        return [[by_id[rid] for rid in rank] for rank in ranked(order, list(by_id))]

    def on_request_routed(
        self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any
    ) -> None:
        text = self._texts.get(pending_request.metadata.internal_request_id)
        if text is not None:
            self.index.add(replica_id, text)

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        text = self._texts.pop(internal_request_id, None)
        if text is not None:
            self.index.add(replica_id, text)
        super().on_request_completed(replica_id, internal_request_id)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        self.index.forget(replica_id)
        super().on_replica_actor_died(replica_id)

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        self.index.keep_only({r.replica_id for r in replicas})
        super().update_replicas(replicas)
