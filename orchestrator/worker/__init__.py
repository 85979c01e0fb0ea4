"""The worker process (arq): the worker and its loops, the runner of one attempt, the reaper."""
