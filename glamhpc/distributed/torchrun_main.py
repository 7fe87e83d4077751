"""torchrun's elastic agent as glamhpc starts it (``-m glamhpc.distributed.torchrun_main``).

The agent runs exactly as ``python -m torch.distributed.run`` would, with one difference: when
Slurm's signal stops it (USR2 before the time limit, TERM on preemption), it says so in one line
and exits with :data:`SIGNALLED_EXIT` instead of printing torch's ``SignalException`` traceback
(twice when TERM and USR2 both arrive). A signal is the healthy preemption path, not a crash: the
ranks save a checkpoint and the node task decides whether the job is requeued.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Sequence

#: The agent's exit status after a stop signal. Not 128+N (what a shell shows for a process
#: killed by signal N): the ranks had time to save, which the node task checks.
SIGNALLED_EXIT = 3


def main(argv: Sequence[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.run import main as torchrun

    try:
        torchrun(list(sys.argv[1:] if argv is None else argv))
    except SignalException as exc:
        # A second Slurm signal (USR2 after TERM) must not interrupt the exit itself.
        for sig in (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        name = signal.Signals(exc.sigval).name
        stamp = time.strftime("%H:%M:%S")
        print(f"[glamhpc launch {stamp}] torchrun stopped its ranks on {name}", flush=True)
        return SIGNALLED_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
