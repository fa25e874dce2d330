"""What a child process was doing when a test gave up waiting for it."""

from __future__ import annotations

import signal
import subprocess
import time


def stacks_then_kill(proc: subprocess.Popen[str], *, tail: int = 8000) -> str:
    """Ask `proc` for its threads' stacks (it registered `faulthandler` on SIGUSR1, as `dml` does),
    kill it, and return the end of its stderr: the stacks, and what it printed before them."""
    proc.send_signal(signal.SIGUSR1)
    time.sleep(2)
    proc.kill()
    _, stderr = proc.communicate()
    return (stderr or "")[-tail:]
