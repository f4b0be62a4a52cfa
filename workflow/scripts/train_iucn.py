import json

import pandas as pd
from common import log_to
from sdm.status import StatusClassifier, save_classifier

log = log_to(snakemake.log[0])
p = snakemake.params.iucn
features = pd.read_parquet(snakemake.input.features)
labels = pd.read_parquet(snakemake.input.redlist).set_index("species")["category"].reindex(features.index)
classifier = StatusClassifier(method=p["classifier"], folds=p["folds"], seed=p["seed"], taxonomy=p["taxonomy"],
                              geography=p["geography"], neighbours=p["neighbours"], decision=p["decision"])
metrics, oof = classifier.cross_validate(features, labels)
metrics["decision_per_fold"] = {str(k): v for k, v in classifier.cv_decisions_.items()}
classifier.fit(features, labels)
metrics["decision"] = {"rule": classifier.decision_rule_, "inner_scores": classifier.decision_scores_,
                       "note": "rules: a number = prior shift exponent, 'ordinal' = ordinal median; chosen on inner "
                               "folds of the training species (the CV figures above are nested)"}
save_classifier(classifier, snakemake.output.classifier)
oof.rename("category_cv").rename_axis("species").to_csv(snakemake.output.cv_predictions)
with open(snakemake.output.metrics, "w") as f:
    json.dump(metrics, f, indent=2)
log.info("IUCN CV: accuracy %.3f, binary %.3f", metrics["accuracy"], metrics["binary_accuracy"])
