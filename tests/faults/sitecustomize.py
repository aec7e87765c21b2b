"""A fault injected into a real `adapterxfer study run` (tests only; on PYTHONPATH in tests/test_study_faults.py).

Python imports ``sitecustomize`` at the start of every interpreter, the study's forkserver and workers
included, so the phase named by $ADAPTERXFER_TEST_FAULT raises there what a GPU's out-of-memory raises:
a RuntimeError, no UserError. Every other phase runs as it would.
"""

import os

if os.environ.get("ADAPTERXFER_TEST_FAULT"):
    from adapterxfer.study import executors

    _run = executors._run

    def _faulty_run(phase, root, backbone, identity):
        if phase.key == os.environ["ADAPTERXFER_TEST_FAULT"]:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by the test)")
        return _run(phase, root, backbone, identity)

    executors._run = _faulty_run
