"""Imported once by the local executor's fork server, so forked stages start warm.

Before the heavy imports, the fork server makes itself safe to leave running: it ignores Ctrl-C
(the user's Ctrl-C is for `conveyor run`, which stops the stages; `conveyor run` starts the server
with SIGINT blocked, so one pressed during its start-up stays pending until ignored here, never a
traceback) and it dies with `conveyor run`, however that ends (`die_with_parent`). Its children
inherit the ignored SIGINT; each stage asks to die with the server in turn (`local.processes`).
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int | None = None) -> None:
    """Have the kernel SIGKILL this process when its parent ends (Linux; a no-op elsewhere). A
    parent already gone before the request (the process is not `parent`'s child any more) ends
    this one at once."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if parent is not None and os.getppid() != parent:
        os._exit(1)


signal.signal(signal.SIGINT, signal.SIG_IGN)  # discards a Ctrl-C pending since the server started
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
die_with_parent()
SERVER_PID = os.getpid()  # the parent every forked stage checks it still has

import pandas  # noqa: E402, F401
import pyarrow.parquet  # noqa: E402, F401
import sklearn.compose  # noqa: E402
import sklearn.datasets  # noqa: E402
import sklearn.ensemble  # noqa: E402
import sklearn.impute  # noqa: E402
import sklearn.linear_model  # noqa: E402
import sklearn.metrics  # noqa: E402
import sklearn.model_selection  # noqa: E402
import sklearn.pipeline  # noqa: E402
import sklearn.preprocessing  # noqa: E402, F401
import skops.io  # noqa: E402, F401

import conveyor.stages.evaluate  # noqa: E402
import conveyor.stages.ingest  # noqa: E402
import conveyor.stages.train  # noqa: E402
import conveyor.stages.transform  # noqa: E402
import conveyor.stages.validate  # noqa: E402, F401
