"""Printing a broker's answer for people at a terminal."""

from __future__ import annotations

from typing import Any

_STATUS_TEXT = {
    "match": "MATCH",
    "no_match": "no match",
    "possible_match": "POSSIBLE MATCH - add more identifiers (NHS number, UPN) and search again",
    "shielded": "SHIELDED - contact the authority's signposting team",
    "unavailable": "UNAVAILABLE",
}


def _contact(c: dict[str, Any]) -> str:
    parts = [c.get("name", "")]
    if c.get("organisation") and c["organisation"] != c.get("name"):
        parts.append(c["organisation"])
    parts += [c[k] for k in ("phone", "secure_email") if c.get(k)]
    return ", ".join(p for p in parts if p)


def answer_text(answer: dict[str, Any]) -> str:
    """A readable rendering of a ``/v1/search`` answer (no identity is printed)."""
    lines = [f"query {answer['query_id']}  complete: {'yes' if answer['complete'] else 'NO'}"]
    if not answer["complete"]:
        names = ", ".join(a["name"] for a in answer["unavailable"])
        lines.append("  ! results may be incomplete: no answer from " + names)
    for r in answer["results"]:
        status = r["status"]
        lines.append(f"  {r['authority']['name']:<28} {_STATUS_TEXT.get(status, status)}")
        if status == "match":
            for inv in r.get("involvements", []):
                lead = " (lead)" if inv.get("lead") else ""
                lines.append(
                    f"      {inv['service_category']:<18} {inv['practitioner_name']}, "
                    f"{inv['practitioner_role']}{lead}, {inv['organisation']}"
                )
                reach = ", ".join(x for x in (inv.get("phone"), inv.get("secure_email")) if x)
                since = f"since {inv['since']}" if inv.get("since") else ""
                lines.append(f"      {'':<18} {reach}  {since}".rstrip())
            if r.get("assessment"):
                lines.append(f"      early help assessment: {_contact(r['assessment'])}")
            if r.get("lead_informed"):
                lines.append("      the lead practitioner has been told that you searched")
        elif status in ("shielded", "possible_match") and r.get("contact"):
            lines.append(f"      contact: {_contact(r['contact'])}")
        elif status == "unavailable" and r.get("reason"):
            lines.append(f"      {r['reason']}")
    return "\n".join(lines)
