"""Every Python process started with this folder on PYTHONPATH records JAX's compile-time events
(backend compilation, tracing, lowering, persistent-cache hits) with the test that caused them:

    PYTHONPATH=tests/probes FLOQ_COMPILE_PROBE_DIR=/tmp/cp make test

writes /tmp/cp/p<pid>.tsv lines "<PYTEST_CURRENT_TEST> <event> <seconds>". It imports JAX in
every process (about 1.3 s each), so timings of a probed run are not the suite's."""

import os

_DIR = os.environ.get("FLOQ_COMPILE_PROBE_DIR")
if _DIR:
    try:
        import jax.monitoring

        _f = open(os.path.join(_DIR, f"p{os.getpid()}.tsv"), "a", buffering=1)

        def _listen(event, seconds, **kwargs):
            _f.write(f"{os.environ.get('PYTEST_CURRENT_TEST', '-')}\t{event}\t{seconds:.4f}\n")

        jax.monitoring.register_event_duration_secs_listener(_listen)
    except Exception:  # a probe never breaks the process it watches
        pass
