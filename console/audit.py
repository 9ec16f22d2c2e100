"""The general audit log: record an operator action, list recent ones (offset resets included)."""
from console import models
from queueing import selectors


def record(*, actor, action, target, before=None, after=None):
    """Store one operator action; call it inside the action's transaction so both commit together."""
    return models.AuditEntry.objects.create(actor=str(actor)[:255], action=action, target=target[:512],
                                            before=before, after=after)


def recent(limit=100):
    """The newest actions, merged with the engine's offset-reset trail, newest first."""
    entries = [
        {"when": e.created_at, "actor": e.actor, "action": e.action, "target": e.target,
         "before": e.before, "after": e.after}
        for e in models.AuditEntry.objects.all()[:limit]
    ]
    entries += [
        {"when": r.created_at, "actor": r.actor, "action": "reset offset",
         "target": f"{r.group_name} {r.topic_name}:{r.partition}", "before": r.before, "after": r.after}
        for r in selectors.offset_resets(limit=limit)
    ]
    return sorted(entries, key=lambda e: e["when"], reverse=True)[:limit]
