"""The zygote: a clean process (no secrets, no sockets but its control channel) that has
imported the sandbox once and forks a child for each run on request, so a fresh process
costs a fork (about a millisecond) instead of a Python start-up and imports.

Control channel (a SOCK_SEQPACKET socket from the worker, fd given in argv):
  worker -> zygote  b"fork"
  zygote -> worker  {"forked": pid} with the child's end of a new socketpair attached
  zygote -> worker  {"exited": pid, "status": returncode}   (negative: killed by a signal)
The zygote is single-threaded: SIGCHLD wakes its select loop through a wakeup fd."""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
from typing import Sequence

from sandbox_worker import child

CHANNEL_FD = 3


def _send(control: socket.socket, message: dict, fds: Sequence[int] = ()) -> None:
    socket.send_fds(control, [json.dumps(message).encode()], list(fds))


def _fork(control: socket.socket, wake_r: int, wake_w: int) -> None:
    child_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # the child: nothing of the zygote's but the imports
        try:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
            # The channel becomes fd 3 and every other descriptor goes: with 0-2 on
            # /dev/null there is then no free slot below the open-files limit.
            os.dup2(child_end.fileno(), CHANNEL_FD)
            os.closerange(CHANNEL_FD + 1, os.sysconf("SC_OPEN_MAX"))
            os.setsid()
            channel = socket.socket(fileno=CHANNEL_FD)
            child.serve_one(channel.makefile("rb"), channel.makefile("wb"))
        finally:
            os._exit(70)
    child_end.close()
    _send(control, {"forked": pid}, [worker_end.fileno()])
    worker_end.close()


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(control, {"exited": pid, "status": os.waitstatus_to_exitcode(status)})


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    while True:
        watched: list[socket.socket | int] = [control, wake_r]
        readable, _, _ = select.select(watched, [], [])
        if wake_r in readable:
            os.read(wake_r, 4096)
            _reap(control)
        if control in readable:
            request = control.recv(64)
            if not request:  # the worker is gone: so are we
                os._exit(0)
            _fork(control, wake_r, wake_w)


if __name__ == "__main__":
    main()
