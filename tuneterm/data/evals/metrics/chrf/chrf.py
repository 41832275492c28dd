"""chrF (character n-gram F-score, n=1..6, beta=2), implemented here: no sacrebleu needed.

The corpus score sums n-gram statistics over items like sacrebleu's corpus chrF (whitespace
removed, score 0..100); per_item holds the sentence-level scores.
"""

from collections import Counter

import datasets
import evaluate


def _ngrams(text, n):
    return Counter(text[i : i + n] for i in range(len(text) - n + 1))


def chrf_stats(prediction, reference, order=6):
    hyp, ref = "".join(str(prediction).split()), "".join(str(reference).split())
    stats = []
    for n in range(1, order + 1):
        h, r = _ngrams(hyp, n), _ngrams(ref, n)
        stats.append((sum((h & r).values()), sum(h.values()), sum(r.values())))
    return stats


def chrf_from_stats(stats, beta=2.0):
    precisions, recalls = [], []
    for match, hyp_total, ref_total in stats:
        if hyp_total > 0 and ref_total > 0:
            precisions.append(match / hyp_total)
            recalls.append(match / ref_total)
    if not precisions:
        return 0.0
    p, r = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    if p + r == 0:
        return 0.0
    return 100 * (1 + beta**2) * p * r / (beta**2 * p + r)


class Chrf(evaluate.Metric):
    higher_is_better = True
    unit = "score"  # 0-100, not a fraction

    def _info(self):
        return evaluate.MetricInfo(
            description="chrF: character n-gram F-score (Popović 2015), corpus level, 0-100.", citation="Popović 2015",
            inputs_description="predictions, references: lists of strings",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, order=6, beta=2.0):
        per = [chrf_stats(p, r, order) for p, r in zip(predictions, references)]
        total = [tuple(sum(s[n][k] for s in per) for k in range(3)) for n in range(order)] if per else []
        return {"chrf": chrf_from_stats(total, beta), "per_item_sentence": [chrf_from_stats(s, beta) for s in per]}
