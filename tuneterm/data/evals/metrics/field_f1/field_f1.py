"""Per-field F1 of JSON predictions against JSON references.

Each item: the (field, value) pairs of the predicted object against the reference's
(values compared after str().strip().lower()); F1 of the pairs. An unparsable prediction
scores 0. Also reports each field's accuracy (field_acc.<name>).
"""

import json

import datasets
import evaluate


def _pairs(text):
    try:
        obj = json.loads(str(text))
    except (ValueError, TypeError):
        return None
    if not isinstance(obj, dict):
        return None
    return {str(k): json.dumps(v, sort_keys=True).strip('"').strip().lower() if not isinstance(v, str)
            else v.strip().lower() for k, v in obj.items()}


def item_f1(prediction, reference):
    pred, ref = _pairs(prediction), _pairs(reference)
    if ref is None:
        return float("nan")
    if not pred:
        return 0.0
    match = sum(1 for k, v in pred.items() if ref.get(k) == v)
    if match == 0:
        return 0.0
    p, r = match / len(pred), match / len(ref)
    return 2 * p * r / (p + r)


class FieldF1(evaluate.Metric):
    higher_is_better = True

    def _info(self):
        return evaluate.MetricInfo(
            description="F1 of (field, value) pairs of JSON predictions, averaged over items; per-field accuracy.",
            citation="", inputs_description="predictions, references: JSON strings",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        scores = [item_f1(p, r) for p, r in zip(predictions, references)]
        valid = [s for s in scores if s == s]
        out = {"field_f1": sum(valid) / max(len(valid), 1), "per_item": [s if s == s else 0.0 for s in scores]}
        fields = {}
        for p, r in zip(predictions, references):
            ref, pred = _pairs(r) or {}, _pairs(p) or {}
            for k, v in ref.items():
                fields.setdefault(k, []).append(int(pred.get(k) == v))
        for k, hits in sorted(fields.items()):
            out[f"field_acc.{k}"] = sum(hits) / len(hits)
        return out
