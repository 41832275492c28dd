"""The provider's own estimate next to ours (Together's estimate endpoint, Mistral's ``dry_run``).

A difference over :data:`TOLERANCE` in tokens or price is reported, never hidden.
"""

from __future__ import annotations

TOLERANCE = 0.05


def _gap(ours: float | None, theirs: float | None) -> float | None:
    if not ours or theirs is None:
        return None
    return (float(theirs) - float(ours)) / float(ours)


def compare(ours: dict, theirs: dict | None) -> dict | None:
    """Both estimates, their relative gaps, and whether any gap exceeds the tolerance."""
    if theirs is None:
        return None
    tokens = _gap(ours.get("billed_tokens"), theirs.get("train_tokens"))
    cost = _gap(ours.get("estimated_cost_usd"), theirs.get("cost_usd"))
    gaps = [g for g in (tokens, cost) if g is not None]
    return {"provider": ours.get("provider"), "ours_tokens": ours.get("billed_tokens"),
            "ours_cost_usd": ours.get("estimated_cost_usd"), "theirs_tokens": theirs.get("train_tokens"),
            "theirs_cost_usd": theirs.get("cost_usd"), "token_gap": tokens, "cost_gap": cost,
            "differs": any(abs(g) > TOLERANCE for g in gaps), "allowed": theirs.get("allowed")}


def describe(c: dict | None) -> str:
    if c is None:
        return "provider estimate: none offered"
    theirs = c["theirs_cost_usd"]
    line = (f"provider estimate: {c['theirs_tokens'] if c['theirs_tokens'] is not None else '?'} tokens, "
            + (f"${theirs:,.2f}" if theirs is not None else "no price")
            + f"  (ours: {c['ours_tokens']:,} tokens, "
            + (f"${c['ours_cost_usd']:,.2f})" if c["ours_cost_usd"] is not None else "price unknown)"))
    if c["differs"]:
        parts = [f"{name} {gap:+.1%}" for name, gap in (("tokens", c["token_gap"]), ("cost", c["cost_gap"]))
                 if gap is not None]
        line += f"\nwarning: the provider's estimate differs from ours by more than 5 % ({', '.join(parts)})"
    if c.get("allowed") is False:
        line += "\nwarning: the provider says this job is over the account's limit (allowed_to_proceed = false)"
    return line
