"""Which URL kinds a service's ingress setting closes (pure).

Cloud Run: "All network ingress paths are subject to the service's ingress setting". With `internal`
or `internal-and-cloud-load-balancing` the run.app URLs (tag URLs included) answer 404 from outside
the VPC; an external load balancer still reaches the service with the latter. A URL closed this way
is reported as such (advisory), never as an outage of the release.
"""

from __future__ import annotations

from stagecheck.settings import UrlKind

# enum name -> gcloud's --ingress word
INGRESS_WORDS = {
    "INGRESS_TRAFFIC_ALL": "all",
    "INGRESS_TRAFFIC_INTERNAL_ONLY": "internal",
    "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER": "internal-and-cloud-load-balancing",
    "INGRESS_TRAFFIC_NONE": "none",
}
_RUN_APP_OPEN = {"", "INGRESS_TRAFFIC_UNSPECIFIED", "INGRESS_TRAFFIC_ALL"}
_LB_OPEN = _RUN_APP_OPEN | {"INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"}


_VPC_OPEN = _RUN_APP_OPEN | {"INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"}


def closed_by_ingress(ingress: str, kind: UrlKind, *, in_vpc: bool = False) -> str | None:
    """Why a URL of `kind` cannot be reached from where stagecheck runs, or None when it is open. `in_vpc`: the
    worker runs inside the VPC, where `internal` ingress admits requests to the run.app URLs (it "Allows requests
    from … VPC networks that are in the same project as your Cloud Run service", docs securing/ingress; setting
    `worker_in_vpc`)."""
    word = INGRESS_WORDS.get(ingress, ingress)
    if in_vpc and kind is not UrlKind.LB and ingress in _VPC_OPEN:
        return None
    if kind is UrlKind.LB:
        if ingress in _LB_OPEN:
            return None
        return f"closed by ingress {word}: an external load balancer does not reach the service"
    if ingress in _RUN_APP_OPEN:
        return None
    return f"closed by ingress {word}: run.app URLs (tag URLs included) answer 404 from outside the VPC"
