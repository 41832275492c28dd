"""Accuracy of predicted indices (e.g. the choice with the highest log-likelihood)."""

import datasets
import evaluate


class Accuracy(evaluate.Metric):
    higher_is_better = True

    def _info(self):
        return evaluate.MetricInfo(
            description="Fraction of items whose predicted index equals the reference index.",
            citation="", inputs_description="predictions, references: lists of integers",
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        hits = [int(int(p) == int(r)) for p, r in zip(predictions, references)]
        return {"accuracy": sum(hits) / max(len(hits), 1), "per_item": hits}
