"""Exact match of extracted answers against targets (per item 0/1, mean over items)."""

import string

import datasets
import evaluate


def normalise(text, ignore_case=True, ignore_punctuation=False, strip=True):
    text = str(text)
    if strip:
        text = text.strip()
    if ignore_case:
        text = text.lower()
    if ignore_punctuation:
        text = text.translate(str.maketrans("", "", string.punctuation))
    return text


class ExactMatch(evaluate.Metric):
    higher_is_better = True

    def _info(self):
        return evaluate.MetricInfo(
            description="Exact match after optional case folding, punctuation removal and stripping.",
            citation="", inputs_description="predictions, references: lists of strings; options "
            "ignore_case (True), ignore_punctuation (False), strip (True)",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, ignore_case=True, ignore_punctuation=False, strip=True):
        hits = [int(normalise(p, ignore_case, ignore_punctuation, strip) == normalise(r, ignore_case, ignore_punctuation, strip))
                for p, r in zip(predictions, references)]
        return {"exact_match": sum(hits) / max(len(hits), 1), "per_item": hits}
