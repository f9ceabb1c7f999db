"""floq's analysis: run directories -> tidy frames -> statistics -> plots and tables.

Three thin layers in rliable's shape, reading only files (never importing ``floq``):

- ``analysis.load``: find run dirs, load ``eval.csv`` + ``run.json`` into one tidy frame,
  build rliable's score dict ``{method: (num_seeds, num_tasks)}``.
- ``analysis.stats``: final score per run by protocol, aggregates (mean, median, IQM,
  optimality gap), stratified-bootstrap CIs, probability of improvement, profiles.
- ``analysis.plots`` / ``analysis.tables``: figures and leaderboards from estimates.
- ``analysis.trends``: fitted scaling slopes with bootstrap CIs and a held-out check, the
  compute-optimal frontier, the expected best score over N tuned configurations.

``analysis.report`` ties them together (``floq analyze``); ``analysis.published`` holds the
FQL and floq papers' numbers in the same schema.
"""
