"""The job functions python-rq workers import in the benchmark: the same names as
rq-worker's built-ins, so every worker runs the very same jobs."""


def echo(*args):
    return list(args)
