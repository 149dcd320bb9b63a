"""Guarded retraining: the decision a training run takes before it trains (runtime module).

:func:`decide` is pure: given what triggered the run, the durable guard ledger, the gate verdicts
of the registry and the count of new labelled rows, it returns one :class:`Decision`:

* ``train`` - retrain now;
* ``ask``   - every guard passes but the circuit breaker is open (the last ``breaker_rejections``
  challengers were all rejected by the gate): a human approves or declines (HITL task);
* ``skip``  - a guard holds; the reason names it and what would lift it.

Guards, checked in this order (the first that holds decides):

1. trigger kind - once a champion exists only ``retrain_on`` asset kinds retrain; manual runs and the
   bootstrap (no champion yet) always train and bypass the guards;
1b. signal      - a monitor (``drift``-kind) event retrains only when a signal listed in ``retrain_when``
   fired in it: ``drift`` (calibrated data drift) and / or ``performance`` (the performance detector).
   ``retrain_when: [performance]`` lets a data-quality alarm alert without retraining. Every decision on a
   monitor event records which signal fired (``drift`` / ``performance`` / ``both`` / ``none``) and why
   (``details["signals"]``);
2. dedupe       - one retrain per drift episode. An episode is a consecutive run of drift windows
   (each window starts where the previous one ended, allowing ``EPISODE_SLACK`` of the window's
   length for scheduling jitter) against the same champion version; its id is the start of its
   first window. A drift event carrying ``extra["episode"]`` names its episode itself;
3. cooldown     - no automatic retrain within ``cooldown_hours`` of the last retrain (the bootstrap
   is not a retrain: the first drift retrain after it is never held back by it);
4. rate         - at most ``max_retrains`` retrains in any ``max_retrains_window_hours``;
5. new labels   - at least ``min_new_labels`` labelled rows newer than the champion's training
   window (the ``window.end`` of its snapshot manifest);
6. breaker      - ``breaker_rejections`` rejected challengers in a row -> ``ask``.

The ledger (:class:`GuardLedger`) is a JSON file written atomically under an exclusive lock (or an
``s3://`` object updated with conditional writes). It keys each decision by ``<dag_id>/<run_id>``:
re-running the policy task of the same run returns the recorded decision (idempotent), so a retry
never double-counts a retrain or re-asks a human. The task's entry point is
:func:`mlops_provider.runtime.monitoring.policy.run_training_policy`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from mlops_provider.runtime.io import objstore
from mlops_provider.runtime.io.atomic import atomic_write
from mlops_provider.runtime.io.objstore import ObjectStore

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Gate verdict tag written by :mod:`mlops_provider.runtime.gate.evaluate` on every judged version.
GATE_DECISION_TAG = "gate.decision"
#: Fraction of a drift window's length tolerated between two windows of one episode.
EPISODE_SLACK = 0.05
#: Decisions kept in the ledger (older ones are dropped; the newest always stay).
MAX_DECISIONS = 500
MAX_WINDOWS = 200


@dataclass(frozen=True)
class GuardSettings:
    """The guard thresholds (``monitoring.retrain_guards`` in the YAML)."""

    cooldown_hours: float = 24.0
    max_retrains: int = 3
    max_retrains_window_hours: float = 168.0
    min_new_labels: int = 1000
    breaker_rejections: int = 3
    enabled: bool = True
    #: monitor signals that may retrain (any of them): drift, performance
    retrain_when: tuple[str, ...] = ("drift", "performance")


@dataclass
class Decision:
    action: str  # train | ask | skip
    reason: str
    #: which rule decided: bootstrap, manual, trigger, dedupe, cooldown, rate, new_labels, breaker, ok
    guard: str
    decided_at: str
    key: str
    triggered_by: list[str] = field(default_factory=list)
    champion: str | None = None
    episode: str | None = None
    new_labels: int | None = None
    rejections: int | None = None
    counts_as_retrain: bool = False
    approval: str | None = None  # for ask: None (pending) | approved | declined
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Decision:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


# ------------------------------------------------------------------------------------------ time
def as_utc(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


# ---------------------------------------------------------------------------------------- ledger
class GuardLedger:
    """Durable guard state of one model: ``{"model", "decisions": {key: decision}, "windows": [...]}``.

    ``windows`` is the drift windows seen so far (start, end, champion, episode), used to chain
    consecutive windows into episodes. A local path is written atomically (``atomic_write``) under
    ``flock`` (put it on storage every worker that runs the policy shares); an ``s3://`` URL (reached
    through ``store``'s client) is updated with optimistic concurrency (conditional ``PUT`` with
    ``If-Match`` on the ETag read, or ``If-None-Match: *`` for the first write), retried when another
    writer won.
    """

    def __init__(self, path: str | os.PathLike[str], model: str, *, store: ObjectStore | None = None) -> None:
        self.url = str(path)
        self.is_s3 = objstore.is_s3(self.url)
        self.path = Path(path) if not self.is_s3 else Path(self.url.rsplit("/", 1)[-1])
        self.model = model
        self.store = store or objstore.DEFAULT_STORE

    def update(self, fn: Callable[[dict[str, Any]], T], attempts: int = 8) -> T:
        """Apply ``fn`` to the state and store the result atomically; returns ``fn``'s result.

        ``fn`` may run more than once (S3: when a concurrent writer won), so it must only depend on
        the state it is given and on reads.
        """
        if not self.is_s3:
            with self.locked() as data:
                return fn(data)
        s3 = self.store.client()  # If-Match on the ETag read: beyond ObjectStore.write_bytes' if_absent
        bucket, key = objstore.split_s3(self.url)
        for attempt in range(attempts):
            data, etag = self._read_s3(s3, bucket, key)
            result = fn(data)
            body = json.dumps(self._trim(data), indent=2, sort_keys=True, default=str).encode("utf-8")
            cond = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            try:
                s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json", **cond)
                return result
            except Exception as e:  # botocore ClientError
                code = str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))
                if code not in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                    raise
                log.info("retrain guard state %s changed concurrently (%s); retrying", self.url, code)
                time.sleep(min(2.0, 0.05 * 2**attempt))
        from mlops_provider.exceptions import RetrainGuardStateError

        raise RetrainGuardStateError(
            f"retrain guard state {self.url} of model {self.model!r} kept changing under {attempts} concurrent "
            "updates; retry the task."
        )

    def _read_s3(self, s3: Any, bucket: str, key: str) -> tuple[dict[str, Any], str | None]:
        try:
            obj = s3.get_object(Bucket=bucket, Key=key)
        except Exception as e:
            code = str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                return self._empty(), None
            raise
        return self._parse(obj["Body"].read().decode("utf-8")), str(obj.get("ETag") or "") or None

    def _empty(self) -> dict[str, Any]:
        return {"model": self.model, "decisions": {}, "windows": []}

    def read(self) -> dict[str, Any]:
        if self.is_s3:
            return self._read_s3(self.store.client(), *objstore.split_s3(self.url))[0]
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return self._empty()
        except OSError as e:
            return self._parse("", error=e)
        return self._parse(text)

    def _parse(self, text: str, error: Exception | None = None) -> dict[str, Any]:
        try:
            if error is not None:
                raise error
            data = json.loads(text)
        except (OSError, ValueError) as e:
            from mlops_provider.exceptions import RetrainGuardStateError

            raise RetrainGuardStateError(
                f"retrain guard state {self.url} of model {self.model!r} is unreadable ({e}). Fix or delete the "
                "file (deleting it forgets past retrains: cooldown and rate limits start afresh)."
            ) from e
        if not isinstance(data, dict):
            return self._empty()
        data.setdefault("decisions", {})
        data.setdefault("windows", [])
        return data

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write under an exclusive lock; the yielded dict is written back on exit."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        with open(lock, "a+") as lf:
            fcntl.flock(lf.fileno(), fcntl.LOCK_EX)
            try:
                data = self.read()
                yield data
                self._write(data)
            finally:
                fcntl.flock(lf.fileno(), fcntl.LOCK_UN)

    @staticmethod
    def _trim(data: dict[str, Any]) -> dict[str, Any]:
        decisions = data.get("decisions", {})
        if len(decisions) > MAX_DECISIONS:
            newest = sorted(decisions.items(), key=lambda kv: str(kv[1].get("decided_at")))[-MAX_DECISIONS:]
            data["decisions"] = dict(newest)
        data["windows"] = list(data.get("windows", []))[-MAX_WINDOWS:]
        return data

    def _write(self, data: dict[str, Any]) -> None:
        self._trim(data)
        atomic_write(self.path, json.dumps(data, indent=2, sort_keys=True, default=str))

    def record_approval(self, key: str, approved: bool, by: Any = None) -> dict[str, Any] | None:
        """Store a human's answer on an ``ask`` decision (an approved ask counts as a retrain)."""

        def apply(data: dict[str, Any]) -> dict[str, Any] | None:
            d = data["decisions"].get(key)
            if d is None:
                return None
            d["approval"] = "approved" if approved else "declined"
            d["counts_as_retrain"] = bool(approved)
            d.setdefault("details", {})["approved_by"] = by
            if approved and d.get("episode"):
                data.setdefault("episodes_retrained", {})[d["episode"]] = key
            return dict(d)

        return self.update(apply)


# --------------------------------------------------------------------------------- gate verdicts
def consecutive_rejections(versions: Iterable[Any], champion: str | None) -> tuple[int, list[str]]:
    """Rejected challengers in a row, newest first, stopping at a promotion or at the champion.

    ``versions`` are MLflow ModelVersion-like objects (``.version``, ``.tags``) or dicts. The read is
    tolerant: a version without a gate verdict (training, gate crashed) or with an unknown verdict is
    ignored; ``reject*`` counts; ``promote*`` / ``accept*`` / ``champion`` ends the streak.
    """
    rows: list[tuple[int, dict[str, Any]]] = []
    for v in versions:
        num = v.get("version") if isinstance(v, Mapping) else getattr(v, "version", None)
        tags = v.get("tags") if isinstance(v, Mapping) else getattr(v, "tags", None)
        try:
            rows.append((int(str(num)), dict(tags or {})))
        except (TypeError, ValueError):
            continue
    rows.sort(key=lambda r: r[0], reverse=True)
    streak: list[str] = []
    for num, tags in rows:
        if champion is not None and str(num) == str(champion):
            break
        verdict = str(tags.get(GATE_DECISION_TAG, "")).strip().lower()
        if verdict.startswith("reject"):
            streak.append(str(num))
        elif verdict.startswith(("promot", "accept", "champion")):
            break
    return len(streak), streak


# ------------------------------------------------------------------------------------- episodes
def _window_of(extra: Mapping[str, Any]) -> tuple[datetime | None, datetime | None]:
    w = extra.get("window") or {}
    if not isinstance(w, Mapping):
        return None, None
    return as_utc(w.get("start")), as_utc(w.get("end"))


def assign_episode(windows: list[dict[str, Any]], extra: Mapping[str, Any], champion: str | None) -> str:
    """The episode id of one drift event; appends the event's window to ``windows`` (idempotently)."""
    if extra.get("episode"):
        return str(extra["episode"])
    start, end = _window_of(extra)
    version = str(extra.get("model_version") or champion or "")
    if start is None or end is None:
        # No window: one episode per champion version (the most conservative dedupe).
        return f"v{version}:unwindowed"
    for w in windows:
        if (
            w.get("start") == start.isoformat()
            and w.get("end") == end.isoformat()
            and w.get("version") == version
        ):
            return str(w["episode"])
    slack = (end - start) * EPISODE_SLACK
    episode = None
    for w in sorted(windows, key=lambda w: str(w.get("end")), reverse=True):
        ws, we = as_utc(w.get("start")), as_utc(w.get("end"))
        if ws is None or we is None or w.get("version") != version:
            continue
        if ws < start <= we + slack:  # adjacent or overlapping, later than the previous one
            episode = str(w["episode"])
            break
    if episode is None:
        episode = f"v{version}:{start.isoformat()}"
    windows.append(
        {"start": start.isoformat(), "end": end.isoformat(), "version": version, "episode": episode}
    )
    return episode


# -------------------------------------------------------------------------------------- signals
def event_signals(extra: Mapping[str, Any]) -> dict[str, bool]:
    """``{"drift", "performance"}`` of one monitor event (an older event without flags means drift)."""
    sig = extra.get("signals")
    if isinstance(sig, Mapping):
        return {"drift": bool(sig.get("drift")), "performance": bool(sig.get("performance"))}
    perf = extra.get("performance") if isinstance(extra.get("performance"), Mapping) else {}
    return {"drift": bool(extra.get("drift", True)), "performance": bool((perf or {}).get("degraded"))}


def signals_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What fired across the monitor events of a run: the flags, ``fired`` (drift / performance / both /
    none) and the monitor's reasons."""
    flags = {"drift": False, "performance": False}
    why: list[str] = []
    for extra in events:
        for k, v in event_signals(extra).items():
            flags[k] = flags[k] or v
        why += [str(r) for r in extra.get("trigger_reasons") or []]
        why += [str(a) for a in extra.get("alarms") or []][:5]
    fired = "both" if all(flags.values()) else next((k for k, v in flags.items() if v), "none")
    return {**flags, "fired": fired, "why": list(dict.fromkeys(why))[:12]}


# ------------------------------------------------------------------------------------- decision
def decide(**kwargs: Any) -> Decision:
    """Decide one run. ``triggered`` is ``[(kind, event extra), ...]``; ``ledger`` is mutated
    (drift windows appended) but decisions are stored by the caller. A decision on monitor events carries
    ``details["signals"]`` (what fired and why)."""
    decision = _decide(**kwargs)
    monitor_events = [extra for k, extra in kwargs["triggered"] if k == "drift"]
    if monitor_events:
        sig = signals_of(monitor_events)
        sig["retrains"] = sorted(k for k in ("drift", "performance") if sig[k] and k in kwargs["settings"].retrain_when)
        decision.details = {**decision.details, "signals": sig}
    return decision


def _decide(
    *,
    key: str,
    now: datetime,
    triggered: list[tuple[str, dict[str, Any]]],
    manual: bool,
    champion: str | None,
    retrain_on: Iterable[str],
    settings: GuardSettings,
    ledger: dict[str, Any],
    rejections: tuple[int, list[str]] | None = None,
    new_labels: int | None = None,
    champion_window_end: str | None = None,
) -> Decision:
    """Decide one run. ``triggered`` is ``[(kind, event extra), ...]``; ``ledger`` is mutated
    (drift windows appended) but decisions are stored by the caller."""
    kinds = sorted({k for k, _ in triggered})
    base: dict[str, Any] = {
        "key": key,
        "decided_at": now.isoformat(),
        "triggered_by": kinds,
        "champion": champion,
    }
    if champion is None:
        return Decision(
            "train",
            f"bootstrap: no @champion yet (triggered by {kinds or 'a manual run'})",
            "bootstrap",
            **base,
        )
    if manual or not kinds:
        return Decision(
            "train",
            "manual or scheduled run: a human asked, guards bypassed",
            "manual",
            counts_as_retrain=True,
            **base,
        )
    wanted = sorted(set(kinds) & set(retrain_on))
    if not wanted:
        return Decision(
            "skip",
            f"not retraining: @champion is v{champion} and this run was triggered by {kinds}; retraining is "
            f"driven by {sorted(retrain_on)} (training.retrain_on in the YAML)",
            "trigger",
            **base,
        )
    episode = None
    drift_events = [extra for k, extra in triggered if k == "drift"]
    signals = signals_of(drift_events) if drift_events else None
    if signals is not None:
        log.info("Monitor signal: %s (drift=%s, performance=%s); why: %s", signals["fired"], signals["drift"],
                 signals["performance"], signals["why"])
        allowed = sorted(k for k in ("drift", "performance") if signals[k] and k in settings.retrain_when)
        if wanted == ["drift"] and not allowed:
            return Decision(
                "skip",
                f"signal: the monitor fired {signals['fired']} (drift={signals['drift']}, performance="
                f"{signals['performance']}) and retraining needs one of {list(settings.retrain_when)} "
                "(monitoring.retrain_guards.retrain_when); the alarm is for a human, not a retrain",
                "signal",
                **base,
            )
    if "drift" in wanted and drift_events:
        windows = ledger.setdefault("windows", [])
        episodes = [assign_episode(windows, e, champion) for e in drift_events]
        episode = episodes[-1]
    base["episode"] = episode
    if not settings.enabled:
        return Decision(
            "train", f"triggered by {wanted}; retrain guards disabled", "ok", counts_as_retrain=True, **base
        )

    past = [Decision.from_dict(d) for k, d in ledger.get("decisions", {}).items() if k != key]
    retrained = ledger.get("episodes_retrained", {})
    if episode is not None and episode in retrained and retrained[episode] != key:
        return Decision(
            "skip",
            f"dedupe: drift episode {episode} already retrained (run {retrained[episode]}); one retrain per "
            "episode. A new episode starts after a window without drift or with a new champion.",
            "dedupe",
            **base,
        )
    retrains = sorted(
        (
            t
            for t in (as_utc(d.decided_at) for d in past if d.counts_as_retrain)
            if t is not None and t <= now
        ),
    )
    if retrains and settings.cooldown_hours > 0:
        last = retrains[-1]
        until = last + timedelta(hours=settings.cooldown_hours)
        if now < until:
            return Decision(
                "skip",
                f"cooldown: last retrain at {last.isoformat()}, next allowed after {until.isoformat()} "
                f"(monitoring.retrain_guards.cooldown_hours={settings.cooldown_hours:g})",
                "cooldown",
                details={"last_retrain": last.isoformat(), "until": until.isoformat()},
                **base,
            )
    span = timedelta(hours=settings.max_retrains_window_hours)
    recent = [t for t in retrains if now - t < span]
    if len(recent) >= settings.max_retrains:
        until = recent[-settings.max_retrains] + span
        return Decision(
            "skip",
            f"rate: {len(recent)} retrain(s) in the last {settings.max_retrains_window_hours:g} h (max "
            f"{settings.max_retrains}); next allowed after {until.isoformat()}",
            "rate",
            details={"recent": [t.isoformat() for t in recent]},
            **base,
        )
    if new_labels is not None and new_labels < settings.min_new_labels:
        return Decision(
            "skip",
            f"new labels: only {new_labels} labelled row(s) newer than the champion's training window "
            f"(ends {champion_window_end}); need {settings.min_new_labels} "
            "(monitoring.retrain_guards.min_new_labels). Retraining would learn from the same data.",
            "new_labels",
            new_labels=new_labels,
            **base,
        )
    n_rej, rejected = rejections or (0, [])
    if settings.breaker_rejections > 0 and n_rej >= settings.breaker_rejections:
        return Decision(
            "ask",
            f"circuit breaker open: the last {n_rej} challenger(s) {rejected} were rejected by the gate "
            f"(breaker_rejections={settings.breaker_rejections}); a human must approve this retrain",
            "breaker",
            new_labels=new_labels,
            rejections=n_rej,
            details={"rejected_versions": rejected},
            **base,
        )
    return Decision(
        "train",
        f"triggered by {wanted}; guards passed",
        "ok",
        new_labels=new_labels,
        rejections=n_rej,
        counts_as_retrain=True,
        **base,
    )


def record(ledger: dict[str, Any], decision: Decision) -> None:
    """Store a decision; a ``train`` on a drift episode marks the episode as retrained."""
    ledger.setdefault("decisions", {})[decision.key] = decision.as_dict()
    if decision.action == "train" and decision.episode and decision.guard == "ok":
        ledger.setdefault("episodes_retrained", {}).setdefault(decision.episode, decision.key)


__all__ = [
    "Decision",
    "GuardLedger",
    "GuardSettings",
    "as_utc",
    "assign_episode",
    "consecutive_rejections",
    "decide",
    "record",
]
