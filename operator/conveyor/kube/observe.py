"""Summaries of the world the operator reads: what a stage's Job and Pods say. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from conveyor.api.common import GROUP
from conveyor.contract import CACHE_KEY_ANNOTATION

Body = dict[str, Any]


@dataclass(frozen=True)
class JobFacts:
    phase: str  # Running | Succeeded | Failed
    attempts: int
    message: str
    start_time: datetime | None
    finish_time: datetime | None
    cache_key: str | None


def controller_of(obj: Any, kind: str) -> Body | None:
    """The controller ownerReference of a child if its controller is a Conveyor `kind`: who
    owns it (name and UID) is read here, never from a label (a label value may be a hash)."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        ours = str(ref.get("apiVersion", "")).startswith(f"{GROUP}/") and ref.get("kind") == kind
        if ours and ref.get("controller"):
            return dict(ref)
    return None


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def job_condition(job: Body, type_: str) -> Body | None:
    for cond in job.get("status", {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return dict(cond)
    return None


def _timed_out(pods: list[Body]) -> bool:
    """Whether the newest finished pod was stopped at its activeDeadlineSeconds."""
    finished = [p for p in pods if (p.get("status") or {}).get("phase") in ("Failed", "Succeeded")]
    if not finished:
        return False
    newest = max(finished, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""))
    return (newest.get("status") or {}).get("reason") == "DeadlineExceeded"


def termination_message(pods: list[Body]) -> str:
    """The newest pod's termination message (the stage's own error, or its log tail)."""
    newest: tuple[str, str] | None = None
    for pod in pods:
        for cs in pod.get("status", {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or {}
            if term:
                stamp = str(term.get("finishedAt") or "")
                text = (term.get("message") or "").strip() or (
                    f"exited with code {term.get('exitCode')}"
                    + (f" ({term['reason']})" if term.get("reason") else "")
                )
                if newest is None or stamp >= newest[0]:
                    newest = (stamp, text)
    return newest[1] if newest else ""


def observe_job(job: Body, pods: list[Body], timeout_seconds: int | None) -> JobFacts:
    status = job.get("status") or {}
    failed_runs = int(status.get("failed") or 0)
    succeeded_runs = int(status.get("succeeded") or 0)
    active = int(status.get("active") or 0)
    start = _time(status.get("startTime")) or _time(job.get("metadata", {}).get("creationTimestamp"))
    key = (job.get("metadata", {}).get("annotations") or {}).get(CACHE_KEY_ANNOTATION)
    complete = job_condition(job, "Complete")
    if complete is not None:
        finish = _time(status.get("completionTime")) or _time(complete.get("lastTransitionTime"))
        return JobFacts("Succeeded", failed_runs + succeeded_runs, "", start, finish, key)
    failed = job_condition(job, "Failed")
    if failed is not None:
        reason = failed.get("reason", "")
        if reason == "DeadlineExceeded" or _timed_out(pods):
            message = (
                f"timed out after {timeout_seconds}s"
                if timeout_seconds
                else "timed out (activeDeadlineSeconds)"
            )
        else:
            message = termination_message(pods) or failed.get("message") or reason or "failed"
        return JobFacts(
            "Failed",
            max(failed_runs, 1),
            message,
            start,
            _time(failed.get("lastTransitionTime")),
            key,
        )
    return JobFacts("Running", failed_runs + max(active, 1), "", start, None, key)
