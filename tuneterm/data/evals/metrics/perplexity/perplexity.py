"""Perplexity from per-item log-likelihoods: exp(sum of token NLLs / number of tokens).

predictions: each item's summed negative log-likelihood (nats); references: its token count.
Lower is better.
"""

import math

import datasets
import evaluate


class Perplexity(evaluate.Metric):
    higher_is_better = False
    unit = "perplexity"

    def _info(self):
        return evaluate.MetricInfo(
            description="Token-level perplexity over items (corpus: total NLL / total tokens).", citation="",
            inputs_description="predictions: summed NLL per item (float); references: token count per item (int)",
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        tokens = sum(int(r) for r in references)
        nll = sum(float(p) for p in predictions)
        return {"perplexity": math.exp(nll / tokens) if tokens else float("nan"),
                "nll_per_token": nll / tokens if tokens else float("nan")}
