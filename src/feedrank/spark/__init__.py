"""Scale-out on Apache Spark (the `spark` extra): the heavy steps — reading events, fitting ALS,
the GLM and item-kNN, scoring every user — run on a cluster and give the same fitted-model
format the service loads. Nothing below cli/ imports this package (docs/spark.md)."""
