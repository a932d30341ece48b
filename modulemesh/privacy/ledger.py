"""The privacy budget ledger: what each principal has spent in the current window.

Every router replica charges the same ledger, and charges it *before* a noisy answer is
released (reserve-before-answer): a crash after the charge loses budget (the answer was never
sent), never the reverse, so no answer leaves the mesh unaccounted and replicas or restarts
never spend more than the budget between them. A charge that would exceed the budget is
refused and nothing is spent.

:class:`FileLedger` is the backend for one machine (``modulemesh run``, tests, a router on a
volume every replica mounts): one JSON file, rewritten under an exclusive ``fcntl`` lock on a
lock file beside it, written to a temporary file, fsynced and renamed over the old one (and
the directory fsynced), so a reader sees the old state or the new, never a torn one, and a
charge that returned is on disk. A ledger that cannot be read is an error, never an empty
ledger: refusing answers is safe, forgetting spends is not.

Windows are fixed and aligned to the Unix epoch: window ``k`` of a budget of ``w`` seconds runs
from ``k*w`` to ``(k+1)*w``, and a principal's spend resets when a new one starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from modulemesh.api.gate import PrivacyBudget

__all__ = [
    "Charge",
    "ConfigMapLedger",
    "FileLedger",
    "Ledger",
    "LedgerError",
    "Usage",
    "window_of",
]

_SLACK = 1e-9
"""Relative tolerance when comparing a sum of spends with the budget, so ten charges of 0.1
fit a budget of 1 despite binary rounding (over-spend bounded by a billionth of the budget)."""


class LedgerError(RuntimeError):
    """The ledger cannot be read or written; the message names it and why."""


def window_of(now: float, seconds: int) -> tuple[float, float]:
    """Start and end (Unix seconds) of the window of length ``seconds`` holding ``now``."""
    start = math.floor(now / seconds) * seconds
    return float(start), float(start + seconds)


@dataclass(frozen=True, slots=True)
class Charge:
    """The outcome of one charge: granted or not, and the account after it."""

    granted: bool
    spent_epsilon: float
    spent_delta: float
    budget_epsilon: float
    budget_delta: float
    window_start: float
    reset_at: float

    @property
    def remaining_epsilon(self) -> float:
        """Epsilon left in this window (never negative)."""
        return max(0.0, self.budget_epsilon - self.spent_epsilon)

    @property
    def remaining_delta(self) -> float:
        """Delta left in this window (never negative)."""
        return max(0.0, self.budget_delta - self.spent_delta)


@dataclass(frozen=True, slots=True)
class Usage:
    """What one budget (a gate's) shows in its current window, for status."""

    window_start: float
    reset_at: float
    principals: int
    spent_epsilon: float
    """Summed over principals."""
    max_spent_epsilon: float
    """The most any one principal has spent."""


class Ledger(Protocol):
    """Where spends are kept; shared by every router replica of a graph."""

    def charge(
        self,
        account: str,
        epsilon: float,
        delta: float,
        budget: PrivacyBudget,
        now: float | None = None,
    ) -> Charge:
        """Spend ``epsilon``/``delta`` from ``account`` if it fits ``budget`` in the current
        window (durably, before returning); otherwise spend nothing and say so."""
        ...

    def usage(self, prefix: str, window_seconds: int, now: float | None = None) -> Usage:
        """The current window of every account whose name starts with ``prefix``."""
        ...

    def describe(self) -> str:
        """Where the ledger is, for messages."""
        ...


def _decide(
    accounts: dict[str, Any],
    account: str,
    epsilon: float,
    delta: float,
    budget: PrivacyBudget,
    now: float | None,
) -> tuple[Charge, dict[str, Any] | None]:
    """One charge against the accounts (``name -> {"start", "end", "epsilon", "delta"}``):
    the outcome, and the accounts to write (with windows that have ended dropped, so the
    ledger stays small), or None when nothing is spent. Every backend decides here."""
    at = time.time() if now is None else now
    start, end = window_of(at, budget.window_seconds)
    entry = accounts.get(account)
    if entry is None or float(entry.get("start", -1)) != start:
        spent_eps, spent_delta = 0.0, 0.0
    else:
        spent_eps, spent_delta = float(entry["epsilon"]), float(entry["delta"])
    new_eps, new_delta = spent_eps + epsilon, spent_delta + delta
    limit_eps, limit_delta = budget.epsilon, budget.delta
    if new_eps > limit_eps * (1 + _SLACK) or new_delta > limit_delta * (1 + _SLACK):
        return Charge(False, spent_eps, spent_delta, limit_eps, limit_delta, start, end), None
    kept = {k: v for k, v in accounts.items() if float(v["end"]) > at and k != account}
    kept[account] = {"start": start, "end": end, "epsilon": new_eps, "delta": new_delta}
    return Charge(True, new_eps, new_delta, limit_eps, limit_delta, start, end), kept


def _usage(accounts: dict[str, Any], prefix: str, window_seconds: int, now: float | None) -> Usage:
    start, end = window_of(time.time() if now is None else now, window_seconds)
    spends = [
        float(entry["epsilon"])
        for name, entry in accounts.items()
        if name.startswith(prefix) and float(entry.get("start", -1)) == start
    ]
    return Usage(start, end, len(spends), math.fsum(spends), max(spends, default=0.0))


class FileLedger:
    """A ledger in one JSON file on a local (or every replica's shared) file system."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._locked():
                self._read()  # refuse an unreadable ledger at start, not at the first answer
        except OSError as exc:
            raise LedgerError(f"privacy budget ledger {self.path}: {exc.strerror or exc}") from exc

    def describe(self) -> str:
        """The file's path."""
        return str(self.path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(text)
            accounts = data["accounts"]
            if not isinstance(accounts, dict):
                raise TypeError("accounts is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            raise LedgerError(
                f"privacy budget ledger {self.path} is not a ledger ({exc}); refusing to "
                "answer rather than forget what was spent"
            ) from exc
        return accounts

    def _write(self, accounts: dict[str, Any]) -> None:
        text = json.dumps({"version": 1, "accounts": accounts}, separators=(",", ":"))
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def charge(
        self,
        account: str,
        epsilon: float,
        delta: float,
        budget: PrivacyBudget,
        now: float | None = None,
    ) -> Charge:
        """See :meth:`Ledger.charge`; raises :class:`LedgerError` if the file fails."""
        try:
            with self._locked():
                charge, accounts = _decide(self._read(), account, epsilon, delta, budget, now)
                if accounts is not None:
                    self._write(accounts)
        except OSError as exc:
            raise LedgerError(f"privacy budget ledger {self.path}: {exc.strerror or exc}") from exc
        return charge

    def usage(self, prefix: str, window_seconds: int, now: float | None = None) -> Usage:
        """See :meth:`Ledger.usage` (read under the lock, so never a half-written file)."""
        try:
            with self._locked():
                accounts = self._read()
        except OSError as exc:
            raise LedgerError(f"privacy budget ledger {self.path}: {exc.strerror or exc}") from exc
        return _usage(accounts, prefix, window_seconds, now)


class ConfigMapLedger:
    """A ledger in a Kubernetes ConfigMap (key ``ledger.json``), for router replicas on
    different nodes: each charge reads the ConfigMap, and writes it back with the
    ``resourceVersion`` it read, so the API server refuses the write (409 Conflict) if another
    replica charged in between; the charge is then computed again from the new state. A
    charge that returned is in etcd. The ConfigMap is created on first use."""

    KEY = "ledger.json"
    ATTEMPTS = 50
    """Conflicts in a row before a charge gives up (refused as unavailable, never granted)."""
    MAX_BYTES = 900 * 1024
    """A ConfigMap holds at most 1 MiB: beyond this the ledger refuses new principals."""

    def __init__(self, api: Any, namespace: str, name: str) -> None:
        from kubernetes import client

        self._core = client.CoreV1Api(api)
        self.namespace = namespace
        self.name = name
        self._read()  # refuse an unreachable or unreadable ledger at start

    def describe(self) -> str:
        """``configmap:<namespace>/<name>``."""
        return f"configmap:{self.namespace}/{self.name}"

    def _fail(self, what: str, exc: Exception) -> LedgerError:
        status = getattr(exc, "status", None)
        reason = getattr(exc, "reason", None) or exc
        detail = f"HTTP {status} {reason}" if status else str(reason)
        return LedgerError(f"privacy budget ledger {self.describe()}: {what}: {detail}")

    def _read(self) -> tuple[dict[str, Any], str | None]:
        """The accounts and the resourceVersion they were read at (None: no ConfigMap yet)."""
        from kubernetes.client.exceptions import ApiException

        try:
            cm = self._core.read_namespaced_config_map(self.name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return {}, None
            raise self._fail("cannot read it", exc) from exc
        except Exception as exc:  # connection errors: the API server is not reachable
            raise self._fail("cannot read it", exc) from exc
        version = str(cm.metadata.resource_version) if cm.metadata is not None else None
        if version is None:
            raise LedgerError(f"privacy budget ledger {self.describe()} has no resourceVersion")
        text = (cm.data or {}).get(self.KEY)
        if text is None:
            return {}, version
        try:
            accounts = json.loads(text)["accounts"]
            if not isinstance(accounts, dict):
                raise TypeError("accounts is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            raise LedgerError(
                f"privacy budget ledger {self.describe()} is not a ledger ({exc}); refusing "
                "to answer rather than forget what was spent"
            ) from exc
        return accounts, version

    def _write(self, accounts: dict[str, Any], version: str | None) -> bool:
        """Write ``accounts`` if the ConfigMap is still at ``version``; False on a conflict."""
        from kubernetes.client.exceptions import ApiException

        text = json.dumps({"version": 1, "accounts": accounts}, separators=(",", ":"))
        if len(text) > self.MAX_BYTES:
            raise LedgerError(
                f"privacy budget ledger {self.describe()} would exceed {self.MAX_BYTES} bytes "
                f"({len(accounts)} accounts this window); use a longer-lived principal or a "
                "shorter window"
            )
        from kubernetes import client

        meta = client.V1ObjectMeta(
            name=self.name, namespace=self.namespace, resource_version=version
        )
        body = client.V1ConfigMap(metadata=meta, data={self.KEY: text})
        try:
            if version is None:
                self._core.create_namespaced_config_map(self.namespace, body)
            else:
                self._core.replace_namespaced_config_map(self.name, self.namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise self._fail("cannot write it", exc) from exc
        except Exception as exc:
            raise self._fail("cannot write it", exc) from exc
        return True

    def charge(
        self,
        account: str,
        epsilon: float,
        delta: float,
        budget: PrivacyBudget,
        now: float | None = None,
    ) -> Charge:
        """See :meth:`Ledger.charge`: read, decide, write at the version read; again on 409."""
        import random

        for attempt in range(self.ATTEMPTS):
            current, version = self._read()
            charge, accounts = _decide(current, account, epsilon, delta, budget, now)
            if accounts is None:
                return charge
            if self._write(accounts, version):
                return charge
            time.sleep(random.uniform(0, 0.005 * (attempt + 1)))  # another replica charged
        raise LedgerError(
            f"privacy budget ledger {self.describe()}: {self.ATTEMPTS} conflicting writes in a "
            "row; too many replicas charging at once"
        )

    def usage(self, prefix: str, window_seconds: int, now: float | None = None) -> Usage:
        """See :meth:`Ledger.usage`."""
        accounts, _ = self._read()
        return _usage(accounts, prefix, window_seconds, now)
