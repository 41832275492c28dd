"""JSON validity: 1 when the prediction parses as JSON (an object by default), else 0."""

import json

import datasets
import evaluate


def is_valid(text, require_object=True):
    try:
        value = json.loads(str(text))
    except (ValueError, TypeError):
        return 0
    return int(isinstance(value, dict) or not require_object)


class JsonValidity(evaluate.Metric):
    higher_is_better = True

    def _info(self):
        return evaluate.MetricInfo(
            description="Rate of predictions that parse as JSON.", citation="",
            inputs_description="predictions: strings; references: strings (unused); option require_object (True)",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, require_object=True):
        hits = [is_valid(p, require_object) for p in predictions]
        return {"json_validity": sum(hits) / max(len(hits), 1), "per_item": hits}
