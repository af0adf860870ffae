"""What the probe stages probe, pure: the serving URLs (service, load balancer), the candidate's tag URL
(direct and through the LB), the WebSocket exchange; a URL nobody knows or the service's ingress closes
becomes a row of its own instead of a probe."""

from __future__ import annotations

from stagecheck.ingress import closed_by_ingress
from stagecheck.model import Criterion, StageResult, Status
from stagecheck.probe_auth import probe_audience
from stagecheck.prober import ProbeTarget
from stagecheck.settings import ProbeMode, ServiceConfig, Settings, UrlKind
from stagecheck.stages import Stage


def serving_targets(settings: Settings, svc: ServiceConfig, service_url: str | None,
                    ingress: str = "") -> tuple[list[ProbeTarget], list[Criterion]]:
    """Probe targets for the direct service URL and the LB; a required URL nobody knows is a FAIL row,
    a URL the service's ingress closes is an advisory (WARN) row saying so, not probed."""
    targets: list[ProbeTarget] = []
    missing: list[Criterion] = []
    lb_url = f"{settings.lb_url}{svc.lb_prefix}{svc.health.lb.path}" if settings.lb_url else None
    direct = f"{service_url}{svc.health.service.path}" if service_url else None
    for kind, url in ((UrlKind.SERVICE, direct), (UrlKind.LB, lb_url)):
        check = svc.health.for_kind(kind)
        if check.mode == ProbeMode.OFF:
            continue
        closed = closed_by_ingress(ingress, kind, in_vpc=settings.worker_in_vpc)
        if closed is not None:
            missing.append(Criterion(name=f"{kind} URL healthy", stage=Stage.PROBE_SERVING, status=Status.WARN,
                                     expected=f"the {kind} URL answers ({check.mode})", observed=closed))
            continue
        if url is None:
            status = Status.FAIL if check.mode == ProbeMode.REQUIRED else Status.WARN
            missing.append(Criterion(name=f"{kind} URL healthy", stage=Stage.PROBE_SERVING, status=status,
                                     expected=f"a {kind} URL to probe ({check.mode})",
                                     observed="no URL known (lb_url not configured?)" if kind is UrlKind.LB
                                     else "the service has no URL"))
            continue
        targets.append(ProbeTarget(url=url, kind=kind, mode=check.mode,
                                   audience=probe_audience(kind, service_url, settings.probes)))
    return targets, missing


def tagged_targets(settings: Settings, svc: ServiceConfig, tag: str, tag_url: str | None,
                   ingress: str = "", service_url: str | None = None) -> tuple[list[ProbeTarget], list[Criterion]]:
    """The candidate's tag URL (unless the ingress closes it: an advisory row says so) and, when
    `lb_tag_url` is configured, the same tag through the load balancer (serverless NEG URL mask)."""
    check = svc.health.tagged
    targets: list[ProbeTarget] = []
    notes: list[Criterion] = []
    closed = closed_by_ingress(ingress, UrlKind.TAGGED, in_vpc=settings.worker_in_vpc)
    if closed is not None:
        notes.append(Criterion(name=f"{UrlKind.TAGGED} URL healthy", stage=Stage.PROBE_TAGGED, status=Status.WARN,
                               expected=f"the tag URL answers ({check.mode})", observed=closed))
    elif tag_url:
        targets.append(ProbeTarget(url=f"{tag_url}{check.path}", kind=UrlKind.TAGGED, mode=check.mode,
                                   audience=probe_audience(UrlKind.TAGGED, service_url, settings.probes)))
    via_lb = settings.lb_tag_target(tag, svc.name)
    if via_lb is not None and closed_by_ingress(ingress, UrlKind.LB) is None:
        url, headers = via_lb
        targets.append(ProbeTarget(url=f"{url}{check.path}", kind=UrlKind.TAGGED, mode=check.mode,
                                   headers=headers or None,
                                   audience=probe_audience(UrlKind.LB, service_url, settings.probes)))
    return targets, notes


def with_advisories(result: StageResult, notes: list[Criterion], if_nothing: str) -> StageResult:
    """Advisory rows (URLs closed by ingress) join the stage; a stage left with nothing probed WARNs, saying why."""
    if not notes:
        return result
    out = result.model_copy(update={"criteria": [*result.criteria, *notes]})
    if out.status is Status.SKIP:
        out.status = Status.WARN
        out.summary = f"{notes[0].observed}; {if_nothing}"
    return out


def websocket_target(svc: ServiceConfig, service_url: str | None, audience: str | None = None) -> ProbeTarget | None:
    """The WebSocket probe on the direct service URL, when the service has a websocket_path."""
    path = svc.health.websocket_path
    if not path or not service_url or svc.health.service.mode == ProbeMode.OFF:
        return None
    return ProbeTarget(url=f"{service_url}{path}", kind=UrlKind.SERVICE, mode=svc.health.service.mode,
                       audience=audience)
