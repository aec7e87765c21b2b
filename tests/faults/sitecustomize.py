"""Faults injected into a real `adapterxfer study run` (tests only; on PYTHONPATH in tests/test_study_faults.py).

Python imports ``sitecustomize`` at the start of every interpreter, the study's forkserver and workers
included, so that:

- the phase named by $ADAPTERXFER_TEST_FAULT raises what a GPU's out-of-memory raises: a RuntimeError, no
  UserError;
- the phase named by $ADAPTERXFER_TEST_KILL kills its own worker process (SIGKILL, as the out-of-memory
  killer would) the first time it runs, leaving the file $ADAPTERXFER_TEST_KILLED behind; it runs as usual
  after that.

Every other phase runs as it would.
"""

import os
import signal

if os.environ.get("ADAPTERXFER_TEST_FAULT") or os.environ.get("ADAPTERXFER_TEST_KILL"):
    from adapterxfer.study import executors

    _run = executors._run

    def _faulty_run(phase, root, backbone, identity, *args):
        if phase.key == os.environ.get("ADAPTERXFER_TEST_FAULT"):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by the test)")
        killed = os.environ.get("ADAPTERXFER_TEST_KILLED", "")
        if phase.key == os.environ.get("ADAPTERXFER_TEST_KILL") and not os.path.exists(killed):
            open(killed, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return _run(phase, root, backbone, identity, *args)

    executors._run = _faulty_run
