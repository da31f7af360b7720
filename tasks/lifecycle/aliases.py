"""Named aliases on a spec's versions (`production`, `staging`): moved atomically, with every decision kept.

Versions stay immutable; aliases live beside them, in the series folder:

    <name>/alias-history.jsonl   one JSON line per decision (moves, rejections, rollbacks): the journal;
                                 also notes that move nothing (an online server's `served`: which version
                                 answered for the alias from when)
    <name>/aliases.json          {"production": "v0003", …}: the journal's moves applied, replaced atomically

A decision is appended to the journal (and fsync'd) first, then applied to `aliases.json`, both under the
series lock; readers apply any move the journal has that `aliases.json` lacks. So a move and its history
line are one step: a kill between the two still moved the alias, with its record, and `--rollback` works.

A promotion gate (`flows.spec.PromoteSpec`) compares a new version's metric with the current holder's and
moves the alias only when the new one is better by at least `min_delta`, or when no version holds it; the
comparison and the move happen under one lock, so two gates finishing at once leave exactly one holder and
both decisions in the history.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path
from typing import Optional

from tasks.common import faults
from tasks.common.files import sweep_stale, write_atomic
from tasks.publish.store import NAME_PATTERN, Store, Version

#: An alias is a slug that cannot be mistaken for a version label or `latest`.
ALIAS_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
ALIAS_RE = re.compile(ALIAS_PATTERN)
#: NAME, NAME@vN, NAME@latest or NAME@ALIAS: how every command and flow names a version.
REF_PATTERN = rf"^{NAME_PATTERN}(@[A-Za-z0-9_-]{{1,64}})?$"
RESERVED = ("latest",)


class RefError(ValueError):
    """A NAME[@vN|@ALIAS] that names no version; the message lists what exists."""


def resolve(ref: str, root: Path) -> Version:
    """The version a reference names: NAME (latest), NAME@vN, NAME@latest or NAME@ALIAS. A reference is a
    name, never a path: anything else is refused before the store is read."""
    if not re.fullmatch(REF_PATTERN, ref):
        raise RefError(f"{ref[:80]!r} is not NAME, NAME@vN or NAME@ALIAS (NAME a slug such as churn)")
    store = Store(root)
    name, _, label = ref.partition("@")
    if not store.versions(name):
        from difflib import get_close_matches

        known = store.names()
        close = get_close_matches(name, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise RefError(f"{ref}: no versions of '{name}'{hint}; known: {', '.join(known) or 'none'}")
    version = lookup(store, name, label or None)
    if version is None and label in ("", "latest"):
        labels = ", ".join(v.label for v in store.versions(name))
        raise RefError(f"{ref}: {store.latest_problem(name) or 'latest: unreadable'}; name a version instead "
                       f"({labels})")
    if version is None:
        holders = Aliases(store, name).holders()
        labels = ", ".join(v.label for v in store.versions(name))
        raise RefError(f"{ref}: '{label}' is neither a version nor an alias of {name}; versions: {labels}; "
                       f"aliases: {', '.join(f'{a} ({v})' for a, v in sorted(holders.items())) or 'none'}")
    return version


def lookup(store: Store, name: str, label: Optional[str]) -> Optional[Version]:
    """The version `label` names in the series: a version label, 'latest', None (latest), or an alias's holder."""
    version = store.get(name, label)
    if version is None and label and valid_alias(label):
        holder = Aliases(store, name).holders().get(label)
        return store.get(name, holder) if holder else None
    return version


class AliasError(ValueError):
    """A request about aliases that cannot be carried out (unknown alias or version, nothing to roll back to)."""


def valid_alias(alias: str) -> bool:
    return bool(ALIAS_RE.match(alias)) and alias not in RESERVED and not re.fullmatch(r"v\d+", alias)


def check_alias(alias: str) -> None:
    if not valid_alias(alias):
        raise AliasError(f"'{alias}' is not an alias: use lowercase letters, digits, '-' and '_' (starting with a "
                         f"letter, at most 32), and not 'latest' or a version label like v3")


class Aliases:
    def __init__(self, store: Store, name: str):
        self.store, self.name = store, name
        self.folder = store.root / name

    @property
    def _holders_path(self) -> Path:
        return self.folder / "aliases.json"

    @property
    def _history_path(self) -> Path:
        return self.folder / "alias-history.jsonl"

    def holders(self) -> dict[str, str]:
        """alias -> version label: `aliases.json` with every move of the journal applied."""
        holders = self._saved()
        for entry in self.history():
            if entry.get("decision") in ("moved", "rolled back") and isinstance(entry.get("alias"), str) \
                    and isinstance(entry.get("to"), str):
                holders[entry["alias"]] = entry["to"]
        return holders

    def _saved(self) -> dict[str, str]:
        try:
            data = json.loads(self._holders_path.read_text())
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(data, dict) else {}

    def problems(self) -> list[str]:
        """What `verify` reports about the aliases: holders that are not versions, and moves the journal has
        that `aliases.json` lacks (an interrupted move; readers already apply it, the next move saves it)."""
        saved, holders = self._saved(), self.holders()
        found = [f"alias {alias}: aliases.json says {saved.get(alias)}, its history says {label} (an interrupted "
                 "move; the history holds)" for alias, label in sorted(holders.items()) if saved.get(alias) != label]
        found += [f"alias {alias}: held by {label}, which is not a version" for alias, label in sorted(holders.items())
                  if self.store.get(self.name, label) is None]
        return found

    def of(self, label: str) -> list[str]:
        """The aliases a version holds."""
        return sorted(alias for alias, holder in self.holders().items() if holder == label)

    def history(self, alias: Optional[str] = None) -> list[dict]:
        try:
            lines = self._history_path.read_bytes().decode(errors="replace").splitlines()
        except OSError:
            return []
        entries = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a torn last line of a killed writer: the history before it stands
            if not isinstance(entry, dict):
                continue
            if alias is None or entry.get("alias") == alias:
                entries.append(entry)
        return entries

    def version(self, alias: str) -> Optional[Version]:
        label = self.holders().get(alias)
        return self.store.get(self.name, label) if label else None

    # ------------------------------------------------------------------ decisions (each under the series lock)

    def _record(self, entry: dict, holders: Optional[dict] = None) -> dict:
        """Journal the decision (append, fsync), then apply it to `aliases.json`: in that order, so no move
        is ever without its history line. Called under the series lock."""
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "name": self.name, **entry}
        sweep_stale(self.folder)
        with self._history_path.open("ab+") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell():
                handle.seek(-1, os.SEEK_END)
                torn = handle.read(1) != b"\n"  # a killed writer's half line: end it, so it spoils only itself
            else:
                torn = False
            handle.write((b"\n" if torn else b"") + (json.dumps(entry, sort_keys=True) + "\n").encode())
            handle.flush()
            os.fsync(handle.fileno())
        faults.point("alias-journaled")
        if holders is not None:
            write_atomic(self._holders_path, (json.dumps(holders, indent=2, sort_keys=True) + "\n").encode())
        return entry

    def set(self, alias: str, label: str, by: str = "person", flow_run_id: Optional[str] = None,
            reason: str = "set by hand") -> dict:
        """Point `alias` at version `label` (which must exist)."""
        check_alias(alias)
        with self.store.locked(self.name):
            version = lookup(self.store, self.name, label)
            if version is None:
                raise AliasError(f"{self.name}@{label}: no such version")
            holders = self.holders()
            previous = holders.get(alias)
            holders[alias] = version.label
            return self._record({"alias": alias, "decision": "moved", "from": previous, "to": version.label,
                                 "by": by, "reason": reason, "flow_run_id": flow_run_id}, holders)

    def rollback(self, alias: str, by: str = "person", flow_run_id: Optional[str] = None) -> dict:
        """Move `alias` back to the version that held it before its current holder."""
        check_alias(alias)
        with self.store.locked(self.name):
            holders = self.holders()
            current = holders.get(alias)
            if current is None:
                raise AliasError(f"{self.name}: no version holds '{alias}'")
            moves = [e for e in self.history(alias) if e.get("decision") in ("moved", "rolled back")
                     and e.get("to") == current]
            previous = moves[-1].get("from") if moves else None
            if previous is None:
                raise AliasError(f"{self.name}@{alias} ({current}) has no earlier holder to roll back to")
            holders[alias] = previous
            return self._record({"alias": alias, "decision": "rolled back", "from": current, "to": previous,
                                 "by": by, "reason": "rollback", "flow_run_id": flow_run_id}, holders)

    def note(self, alias: str, decision: str, label: str, previous: Optional[str], by: str, reason: str,
             flow_run_id: Optional[str] = None) -> dict:
        """Record what a reader did about the alias (an online server's `served` or `not served`): a history
        line that moves nothing, so holders and rollbacks ignore it, and the history says which version
        answered when."""
        if decision in ("moved", "rolled back", "rejected", "kept"):
            raise AliasError(f"'{decision}' is a decision about the alias itself, not a note")
        with self.store.locked(self.name):
            return self._record({"alias": alias, "decision": decision, "from": previous, "to": label, "by": by,
                                 "reason": reason, "flow_run_id": flow_run_id})

    def gate(self, alias: str, label: str, metric: str, mode: str, min_delta: float,
             flow_run_id: Optional[str] = None) -> dict:
        """Move `alias` to version `label` if its `metric` is strictly better than the holder's, by at least
        `min_delta` (or none holds it); the decision, with both values, is recorded either way and returned."""
        check_alias(alias)
        with self.store.locked(self.name):
            holders = self.holders()
            current = holders.get(alias)
            candidate = _metric(self.store.get(self.name, label), metric)
            holder = _metric(self.store.get(self.name, current), metric) if current else None
            entry = {"alias": alias, "from": current, "to": label, "by": "gate", "metric": metric, "mode": mode,
                     "min_delta": min_delta, "candidate": candidate, "holder": holder, "flow_run_id": flow_run_id}
            if current == label:
                return {**entry, "decision": "kept", "reason": f"{label} already holds '{alias}'"}
            if candidate is None:
                return self._record({**entry, "decision": "rejected",
                                     "reason": f"{label} has no finite {metric}"})
            if holder is None:
                holders[alias] = label
                why = "no version held it" if current is None else f"{current} has no finite {metric}"
                return self._record({**entry, "decision": "moved", "reason": why}, holders)
            improvement = candidate - holder if mode == "max" else holder - candidate
            if improvement > 0 and improvement >= min_delta:  # strictly better: a tie keeps the holder
                holders[alias] = label
                return self._record({**entry, "decision": "moved", "reason": f"{metric} {candidate:.6g} beats "
                                     f"{holder:.6g} by at least {min_delta:g} ({mode})"}, holders)
            return self._record({**entry, "decision": "rejected", "reason": f"{metric} {candidate:.6g} does not "
                                 f"beat {holder:.6g} by {min_delta:g} ({mode}); {current} keeps '{alias}'"})


def _metric(version: Optional[Version], metric: str) -> Optional[float]:
    if version is None:
        return None
    try:
        value = version.manifest().get("metrics", {}).get(metric)
    except (OSError, ValueError):
        return None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def series_problems(store: Store, name: str) -> list[str]:
    """What `verify` reports about a series beyond its versions' files: its `latest` link and its aliases."""
    latest = store.latest_problem(name)
    return ([latest] if latest else []) + Aliases(store, name).problems()
