"""The scheduled job: a config in, policies committed to GitOps and object storage out.

It sits above :mod:`recommender.pipeline` (like the CLI): each run reads a rolling window of
flows, recommends, compares with the last run's state and commits when something changed.

Public modules:

- :mod:`~recommender.job.runner`: :func:`run_job`, :class:`JobResult`;
- :mod:`~recommender.job.config`: :func:`load_job_config`, :class:`JobConfig`;
- :mod:`~recommender.job.state`: the incremental state between runs;
- :mod:`~recommender.job.storage`: folders and object storage;
- :mod:`~recommender.job.gitops`: the git commit and push;
- :mod:`~recommender.job.log`: structured logging.
"""

from .runner import CURRENT_FILE, JobResult, run_job

__all__ = ["CURRENT_FILE", "JobResult", "run_job"]
