"""F1 over string labels: macro (default), micro or weighted average over the label set.

The label set is the references' labels by default (labels="references"): a prediction
outside it counts as a miss for the true class without adding a class of its own. With
labels="union" it matches scikit-learn's default.
"""

import datasets
import evaluate


def f1_score(predictions, references, average="macro", labels="references", ignore_case=True):
    norm = (lambda s: str(s).strip().lower()) if ignore_case else (lambda s: str(s).strip())
    preds = [norm(p) for p in predictions]
    refs = [norm(r) for r in references]
    label_set = sorted(set(refs) | (set(preds) if labels == "union" else set()))
    if not label_set:
        return 0.0
    tp = {c: 0 for c in label_set}
    fp = dict(tp)
    fn = dict(tp)
    for p, r in zip(preds, refs):
        if p == r:
            tp[r] += 1
        else:
            fn[r] += 1
            if p in fp:
                fp[p] += 1
    if average == "micro":
        t, f_p, f_n = sum(tp.values()), sum(fp.values()), sum(fn.values())
        return 2 * t / (2 * t + f_p + f_n) if t else 0.0
    scores, weights = [], []
    for c in label_set:
        denom = 2 * tp[c] + fp[c] + fn[c]
        scores.append(2 * tp[c] / denom if denom else 0.0)
        weights.append(tp[c] + fn[c])
    if average == "weighted":
        total = sum(weights)
        return sum(s * w for s, w in zip(scores, weights)) / total if total else 0.0
    return sum(scores) / len(scores)


class F1(evaluate.Metric):
    higher_is_better = True

    def _info(self):
        return evaluate.MetricInfo(
            description="F1 over string labels (macro by default).", citation="",
            inputs_description="predictions, references: lists of label strings; options average "
            "(macro|micro|weighted), labels (references|union), ignore_case (True)",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, average="macro", labels="references", ignore_case=True):
        return {"f1": f1_score(predictions, references, average, labels, ignore_case)}
