"""ROUGE-L F-measure: longest common subsequence of lower-cased word tokens (no downloads)."""

import re

import datasets
import evaluate

_TOKEN = re.compile(r"[a-z0-9]+")


def tokens(text):
    return _TOKEN.findall(str(text).lower())


def lcs_length(a, b):
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(prediction, reference, beta=1.0):
    p, r = tokens(prediction), tokens(reference)
    if not p or not r:
        return float(p == r)
    lcs = lcs_length(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


class RougeL(evaluate.Metric):
    higher_is_better = True

    def _info(self):
        return evaluate.MetricInfo(
            description="ROUGE-L F-measure (LCS of word tokens), averaged over items.", citation="Lin 2004",
            inputs_description="predictions, references: lists of strings",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        scores = [rouge_l(p, r) for p, r in zip(predictions, references)]
        return {"rouge_l": sum(scores) / max(len(scores), 1), "per_item": scores}
