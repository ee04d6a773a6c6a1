"""The machinery that runs the experiment: the ``saccader`` command line (``cli``), the jobs the workflow launches
(``train``, ``evaluate``, ``attack``, ``params``, ``plan``, data checks), the launcher and warm start, config
loading, results, checkpoints, bundles and prediction. It may import ``baselines`` (it runs them); the method
(``saccader`` outside this package) never imports it, except ``saccader.models.load`` (a bundle reader)."""
