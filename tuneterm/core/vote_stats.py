"""Statistics over blind votes: pairwise win rates, a Bradley-Terry ranking, judge-human agreement.

- A decided vote ("answer k is better") is a win of k over every other answer shown with it; a tie
  or "both bad" is a tie for every pair shown. Two losers of a 3-way vote are not compared.
- Win rate of a over b = wins / decisive comparisons, with a 95% Wilson interval (ties reported
  beside it, not folded in).
- Bradley-Terry strengths by the MM algorithm (Hunter 2004) on wins, a tie counting half a win each
  way; ``prior`` virtual ties per compared pair keep a model that won every vote finite. Shown on an
  Elo-like scale (1000 + 400·log10 strength, geometric mean 1000) with 95% percentile intervals from
  a seeded bootstrap over votes.
- Agreement between the judge and human votes on the same rounds: % agreement (Wilson) and Cohen's
  kappa.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass

from tuneterm.core.evals.stats import _percentile, resample_indices, wilson
from tuneterm.core.votes import Vote

MIN_VOTES = 10  # below this many votes the ranking is shown with a "too few votes" note
MIN_PAIR = 5    # below this many comparisons a pair's win rate is marked too few


def comparisons(votes: list[Vote]) -> list[tuple[str, str, float]]:
    """(a, b, score of a) for every pair a vote compares: 1 a won, 0 b won, 0.5 a tie."""
    out = []
    for v in votes:
        names = v.variants
        if v.outcome.isdigit():
            w = int(v.outcome) - 1
            out.extend((names[w], names[i], 1.0) for i in range(len(names)) if i != w and names[i] != names[w])
        else:
            out.extend((names[i], names[j], 0.5) for i in range(len(names)) for j in range(i + 1, len(names))
                       if names[i] != names[j])
    return out


@dataclass
class PairRow:
    a: str
    b: str
    n: int          # comparisons, ties included
    wins_a: int
    wins_b: int
    ties: int
    win_rate: float  # of a over b, decisive comparisons only (nan when none)
    ci_low: float
    ci_high: float
    too_few: bool


def pair_table(votes: list[Vote]) -> list[PairRow]:
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for a, b, s in comparisons(votes):
        key, flip = ((a, b), False) if a <= b else ((b, a), True)
        c = counts[key]
        if s == 0.5:
            c[2] += 1
        elif (s == 1.0) != flip:
            c[0] += 1
        else:
            c[1] += 1
    rows = []
    for (a, b), (wa, wb, t) in sorted(counts.items()):
        decisive = wa + wb
        lo, hi = wilson(wa, decisive)
        rows.append(PairRow(a, b, decisive + t, wa, wb, t, wa / decisive if decisive else float("nan"), lo, hi,
                            decisive + t < MIN_PAIR))
    return rows


def bradley_terry(comps: list[tuple[str, str, float]], prior: float = 1.0, iters: int = 500,
                  tol: float = 1e-10) -> dict[str, float]:
    """Bradley-Terry strengths (geometric mean 1) from (a, b, score of a) comparisons, by MM."""
    models = sorted({m for a, b, _ in comps for m in (a, b)})
    wins: Counter = Counter()
    n_pair: Counter = Counter()
    for a, b, s in comps:
        wins[a] += s
        wins[b] += 1 - s
        n_pair[frozenset((a, b))] += 1
    for pair in list(n_pair):
        for m in pair:
            wins[m] += prior / 2
        n_pair[pair] += prior
    p = {m: 1.0 for m in models}
    for _ in range(iters):
        new = {}
        for i in models:
            denom = sum(n / (p[i] + p[j]) for pair, n in n_pair.items() if i in pair
                        for j in pair if j != i)
            new[i] = wins[i] / denom if denom > 0 else p[i]
        g = math.exp(sum(math.log(max(v, 1e-300)) for v in new.values()) / len(new)) if new else 1.0
        new = {m: v / g for m, v in new.items()}
        done = all(abs(math.log(max(new[m], 1e-300)) - math.log(max(p[m], 1e-300))) < tol for m in models)
        p = new
        if done:
            break
    return p


def rating(strength: float) -> float:
    """A strength on an Elo-like scale: 1000 at the geometric mean, +400 per tenfold odds."""
    return 1000.0 + 400.0 * math.log10(max(strength, 1e-300))


@dataclass
class RankRow:
    model: str
    rating: float
    ci_low: float
    ci_high: float
    votes: int   # votes this model was shown in


def ranking(votes: list[Vote], rounds: int = 200, seed: int = 1234, prior: float = 1.0) -> list[RankRow]:
    """Bradley-Terry ratings, best first, with 95% bootstrap intervals (resampling votes)."""
    if not votes:
        return []
    point = bradley_terry(comparisons(votes), prior)
    samples: dict[str, list[float]] = {m: [] for m in point}
    for idx in resample_indices(len(votes), rounds, seed):
        p = bradley_terry(comparisons([votes[i] for i in idx]), prior, iters=200, tol=1e-8)
        for m in point:
            if m in p:
                samples[m].append(rating(p[m]))
    shown = Counter(m for v in votes for m in set(v.variants))
    rows = []
    for m, s in point.items():
        vals = sorted(samples[m])
        rows.append(RankRow(m, rating(s), _percentile(vals, 0.025), _percentile(vals, 0.975), shown[m]))
    rows.sort(key=lambda r: -r.rating)
    return rows


# --- judge vs human -------------------------------------------------------------------------


def _label(v: Vote) -> str:
    return v.winner if v.outcome.isdigit() and v.winner else v.outcome


def cohen_kappa(pairs: list[tuple[str, str]]) -> float:
    """Cohen's kappa of two raters' labels on the same items (nan when chance agreement is 1)."""
    n = len(pairs)
    if n == 0:
        return float("nan")
    po = sum(a == b for a, b in pairs) / n
    ca, cb = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    pe = sum(ca[k] * cb[k] for k in ca) / (n * n)
    return (po - pe) / (1 - pe) if pe < 1 else float("nan")


@dataclass
class Agreement:
    judge: str
    rounds: int
    agree: int
    rate: float
    ci_low: float
    ci_high: float
    kappa: float


def agreement(votes: list[Vote]) -> list[Agreement]:
    """Per judge: agreement with the human vote on the rounds both voted on (the human's last vote)."""
    human = {v.round_id: v for v in votes if v.is_human}
    by_judge: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for v in votes:
        if v.voter.startswith("judge:") and v.round_id in human:
            by_judge[v.voter].append((_label(human[v.round_id]), _label(v)))
    out = []
    for judge, pairs in sorted(by_judge.items()):
        k = sum(a == b for a, b in pairs)
        lo, hi = wilson(k, len(pairs))
        out.append(Agreement(judge, len(pairs), k, k / len(pairs), lo, hi, cohen_kappa(pairs)))
    return out


# --- one summary for the CLI and the Evals screen ----------------------------------------------


def summary(votes: list[Vote], rounds: int = 200) -> dict:
    """Win-rate table, ranking and agreement of the human votes (judge verdicts rank separately)."""
    human = [v for v in votes if v.is_human]
    judged = [v for v in votes if v.voter.startswith("judge:")]
    note = None
    if len(human) < MIN_VOTES:
        note = (f"too few votes: {len(human)} human vote(s); a ranking needs at least {MIN_VOTES}, "
                "so read these numbers as a sketch")
    judge_note = None
    if judged and len(judged) < MIN_VOTES:
        judge_note = (f"too few judge verdicts: {len(judged)}; a ranking needs at least {MIN_VOTES}, "
                      "so its intervals say little")
    return {
        "votes": len(human), "judge_verdicts": len(judged), "min_votes": MIN_VOTES, "note": note,
        "judge_note": judge_note,
        "pairs": [asdict(r) for r in pair_table(human)],
        "ranking": [asdict(r) for r in ranking(human, rounds)],
        "judge_ranking": [asdict(r) for r in ranking(judged, rounds)],
        "agreement": [asdict(a) for a in agreement(votes)],
    }


def _short(name: str, width: int = 28) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _pct(x: float) -> str:
    return "  —  " if math.isnan(x) else f"{100 * x:4.0f}%"


def render(s: dict) -> str:
    """The summary as plain text (``tuneterm eval votes``)."""
    lines = [f"{s['votes']} human vote(s), {s['judge_verdicts']} judge verdict(s)"]
    if s["note"]:
        lines.append(s["note"])
    if not s["pairs"]:
        lines.append("no votes yet: tuneterm chat --compare A,B --blind (or the blind mode of the Chat screen)")
        return "\n".join(lines) + "\n"
    lines += ["", "win rates (A wins-B wins of the decisive votes; 95% Wilson interval)",
              f"{'model A':<22} {'model B':<22} {'A-B':>7} {'ties':>4}  A win rate"]
    for r in s["pairs"]:
        ci = "" if math.isnan(r["win_rate"]) else f" [{_pct(r['ci_low']).strip()}, {_pct(r['ci_high']).strip()}]"
        lines.append(f"{_short(r['a'], 22):<22} {_short(r['b'], 22):<22} {r['wins_a']:>3}-{r['wins_b']:<3} "
                     f"{r['ties']:>4}  {_pct(r['win_rate']).strip()}{ci}{' (too few)' if r['too_few'] else ''}")
    for title, key in (("ranking (Bradley-Terry, Elo scale; 95% bootstrap interval)", "ranking"),
                       ("judge ranking", "judge_ranking")):
        if s[key]:
            lines += ["", title]
            if key == "judge_ranking" and s.get("judge_note"):
                lines.append(s["judge_note"])
            for i, r in enumerate(s[key], 1):
                lines.append(f"{i:>2}. {_short(r['model'], 36):<36} {r['rating']:6.0f} "
                             f"[{r['ci_low']:.0f}, {r['ci_high']:.0f}]  {r['votes']} vote(s)")
    if s["agreement"]:
        lines += ["", "judge vs human (same rounds)"]
        for a in s["agreement"]:
            kappa = "—" if math.isnan(a["kappa"]) else f"{a['kappa']:.2f}"
            lines.append(f"{a['judge']}: {a['agree']}/{a['rounds']} agree ({_pct(a['rate']).strip()}, 95% CI "
                         f"[{_pct(a['ci_low']).strip()}, {_pct(a['ci_high']).strip()}]), Cohen's kappa {kappa}")
    return "\n".join(lines) + "\n"
