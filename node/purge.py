"""Retention: deleting records past the retention age (by default the 24th birthday).

Archiving needs no job (searches never return anyone aged 18 or over, see ``node.policy``);
deletion does. ``purge`` deletes, in one transaction, every child at or past the retention age
with their involvements and any notifications still held about them, bumps the store's
generation so the matcher reloads, and records a summary row in ``purge_log``. The caller also
writes the summary to the node's audit log when it has one. The summary holds counts and the
cut-off date only, never who was deleted.

It runs inside the node (at start and then every ``purge_interval_seconds``) and on demand as
``signpost node purge --config node.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from federation.canonical import JsonObject
from node.policy import retention_cutoff
from node.store import Store


@dataclass(frozen=True)
class PurgeSummary:
    """What one purge deleted (counts only)."""

    ran_at: datetime
    retention_age: int
    cutoff: str
    children: int
    involvements: int
    notifications: int
    dry_run: bool = False

    def to_entry(self, node_id: str) -> JsonObject:
        """The audit-log entry for this purge."""
        return {
            "type": "purge",
            "node": node_id,
            "time": self.ran_at.isoformat(timespec="seconds"),
            "retention_age": self.retention_age,
            "born_on_or_before": self.cutoff,
            "children_deleted": self.children,
            "involvements_deleted": self.involvements,
            "notifications_deleted": self.notifications,
        }


def purge(store: Store, *, today: date, now: datetime, retention_age: int,
          dry_run: bool = False) -> PurgeSummary:
    """Delete every record at or past ``retention_age`` on ``today``; see the module docstring."""
    cutoff = retention_cutoff(today, retention_age)
    with store.transaction() as conn:
        children = conn.execute("SELECT count(*) FROM children WHERE date_of_birth <= ?",
                                (cutoff,)).fetchone()[0]
        involvements = conn.execute(
            "SELECT count(*) FROM involvements WHERE child_record_id IN "
            "(SELECT record_id FROM children WHERE date_of_birth <= ?)", (cutoff,)).fetchone()[0]
        notifications = conn.execute(
            "SELECT count(*) FROM outbox WHERE child_record_id IN "
            "(SELECT record_id FROM children WHERE date_of_birth <= ?)", (cutoff,)).fetchone()[0]
        summary = PurgeSummary(now, retention_age, cutoff, children, involvements, notifications, dry_run)
        if not dry_run:
            conn.execute("DELETE FROM outbox WHERE child_record_id IN "
                         "(SELECT record_id FROM children WHERE date_of_birth <= ?)", (cutoff,))
            conn.execute("DELETE FROM involvements WHERE child_record_id IN "
                         "(SELECT record_id FROM children WHERE date_of_birth <= ?)", (cutoff,))
            conn.execute("DELETE FROM children WHERE date_of_birth <= ?", (cutoff,))
            if children:
                store.bump_generation(conn)
            conn.execute(
                "INSERT INTO purge_log (ran_at, cutoff, retention_age, children, involvements, notifications)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (int(now.timestamp()), cutoff, retention_age, children, involvements, notifications))
    return summary


def history(store: Store) -> list[JsonObject]:
    """Every purge recorded in this store, oldest first."""
    rows = store.db.execute("SELECT * FROM purge_log ORDER BY ran_at, rowid")
    return [dict(r) for r in rows]
