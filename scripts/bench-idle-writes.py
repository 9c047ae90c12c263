#!/usr/bin/env python3
"""Explains each write the operator made in the controller benchmark's idle window.

Used by scripts/bench-controller.sh (docs/benchmarks.md). For every write request of
the operator's identity in the window (audit lines FROM+1..TO), it looks for what
could have caused it: a write by anyone else to an object of the same system (its
Deployment's status by the Deployment controller, a ReplicaSet, a Pod, the system
itself) after the operator's previous write for that system. Such a write follows a
real change in the cluster and is reported apart, with the change; one with no such
change before it is "unexplained", and the idle-writes target (0) is for those. With
two status snapshots (the systems as listed before and after the window, `kubectl get
-o json`), it also names what changed in each written status: conditions by type,
reason and message, and the other status fields.

The bench's objects are named from their system (sys-N, new-N, and their children
sys-N-...), which is how a child is tied to its system here; the audit log is
Metadata level, so names, users and times are all it holds.

Usage: bench-idle-writes.py AUDIT FROM TO USER [BEFORE.json AFTER.json]
Prints a summary block for the bench's result, then one line per written system
(at most 20 of each kind).
"""

import collections
import json
import re
import sys

WRITES = {"create", "update", "patch", "delete", "deletecollection"}
SYSTEM = re.compile(r"^((?:sys|new)-\d+)")


def system_of(entry):
    ref = entry.get("objectRef") or {}
    ns, name = ref.get("namespace") or "", ref.get("name") or ""
    if not ns.startswith("bench-"):
        return None
    match = SYSTEM.match(name)
    return (ns, match.group(1)) if match else None


def resource(entry):
    ref = entry.get("objectRef") or {}
    sub = ref.get("subresource")
    return ref.get("resource", "") + ("/" + sub if sub else "")


def who(entry):
    return entry["user"]["username"].rsplit(":", 1)[-1]


def statuses(path):
    if not path:
        return {}
    with open(path) as f:
        items = json.load(f).get("items", [])
    return {(o["metadata"]["namespace"], o["metadata"]["name"]): o.get("status") or {} for o in items}


def status_diff(old, new):
    """What differs between two statuses, in words."""
    out = []
    old_c = {c["type"]: c for c in old.get("conditions") or []}
    new_c = {c["type"]: c for c in new.get("conditions") or []}
    for type_ in sorted(set(old_c) | set(new_c)):
        a, b = old_c.get(type_, {}), new_c.get(type_, {})
        key = ("status", "reason", "message")
        if tuple(a.get(k) for k in key) != tuple(b.get(k) for k in key):
            out.append(
                "%s %s/%s -> %s/%s (%s)"
                % (type_, a.get("status"), a.get("reason"), b.get("status"), b.get("reason"), (b.get("message") or "")[:120])
            )
    for field in sorted((set(old) | set(new)) - {"conditions"}):
        if old.get(field) != new.get(field):
            out.append("%s %s -> %s" % (field, json.dumps(old.get(field))[:80], json.dumps(new.get(field))[:80]))
    return out


def main():
    audit, first, last, user = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    before = statuses(sys.argv[5] if len(sys.argv) > 5 else None)
    after = statuses(sys.argv[6] if len(sys.argv) > 6 else None)
    last_own = {}  # system -> audit line of the operator's latest write for it
    others = collections.defaultdict(list)  # system -> [(line, who, verb, resource, name)]
    in_window = []  # (line, system, verb, resource)
    others_in_window = collections.Counter()
    with open(audit) as f:
        for number, line in enumerate(f, 1):
            if number > last:
                break
            if '"ResponseComplete"' not in line or not any('"verb":"%s"' % v in line for v in WRITES):
                continue
            entry = json.loads(line)
            if entry.get("stage") != "ResponseComplete" or entry.get("verb") not in WRITES:
                continue
            res = resource(entry)
            if res in ("leases", "events"):
                continue
            system = system_of(entry)
            if entry["user"]["username"] == user:
                if number > first:
                    in_window.append((number, system, entry["verb"], res))
                if system:
                    last_own.setdefault(system, []).append(number)
            else:
                if number > first:
                    others_in_window[(who(entry), entry["verb"], res)] += 1
                if system:
                    others[system].append((number, who(entry), entry["verb"], res, entry["objectRef"].get("name")))

    explained, unexplained = [], []
    for number, system, verb, res in in_window:
        own = [n for n in last_own.get(system, []) if n < number] if system else []
        since = own[-1] if own else 0
        causes = [c for c in others.get(system, []) if since < c[0] < number] if system else []
        if system in before and system in after:
            diff = status_diff(before[system], after[system]) or ["no status difference between the snapshots"]
        else:
            diff = ["no status snapshots"]
        row = (system, verb, res, causes, diff)
        (explained if causes else unexplained).append(row)

    print("explained=%d unexplained=%d others=%d" % (len(explained), len(unexplained), sum(others_in_window.values())))
    for (name, verb, res), n in others_in_window.most_common(8):
        print("other %6d %s %s %s" % (n, name, verb, res))
    for kind, rows in (("explained", explained), ("unexplained", unexplained)):
        for system, verb, res, causes, diff in rows[:20]:
            what = "; ".join(diff)
            cause = ", ".join(sorted({"%s %s %s" % (c[1], c[2], c[3]) for c in causes})) or "no change by another writer"
            print("%s %s/%s %s %s: %s | after: %s" % (kind, system[0] if system else "-", system[1] if system else "-", verb, res, what, cause))


if __name__ == "__main__":
    main()
