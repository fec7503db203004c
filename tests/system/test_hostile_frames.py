"""Frames the container's code writes to the agent's socket itself (issue 14,
item 5): whatever the body holds, the host sees a protocol error, kills that
container, and the next cell runs in a fresh one showing its own output only.

Before, a frame of deeply nested JSON raised RecursionError out of the host's
json.loads: the cell failed with a traceback, the container lived on with its
reply unread, and the next cell showed the previous cell's output, then
"broke the session protocol"."""
from __future__ import annotations

import pytest

from sandbox_kernel.session.client import Session

pytestmark = pytest.mark.usefixtures("no_leftovers")

# Run in the container: the agent's socket is the one socket among its fds.
WRITE_FRAME = '''
import os, stat, struct

def is_socket(fd):
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:                  # the directory listdir had open
        return False

sock_fd = min(fd for fd in map(int, os.listdir("/proc/self/fd")) if fd > 2 and is_socket(fd))
frame = struct.pack(">I", len(BODY)) + BODY
while frame:
    frame = frame[os.write(sock_fd, frame):]
print("first")
'''

BODIES = {
    "deep-lists": b'b\'{"type": "stream", "id": 1, "name": "stdout", "text": "x", "d": \' + b"[" * 100000'
                  b' + b"]" * 100000 + b"}"',
    "deep-objects": b'b\'{"type": "reply", "id": 1, "content": \' + b\'{"a": \' * 50000 + b"0"'
                    b' + b"}" * 50000 + b"}"',
    "list-as-id": b'b\'{"type": "reply", "id": [1], "content": {}}\'',          # unhashable: TypeError
    "bad-utf8": b'b\'{"type": "stream", "id": 1, "name": "stdout", "text": "\\xff"}\'',
}


@pytest.mark.parametrize("body", BODIES)
def test_a_hostile_frame_kills_that_container_and_the_next_cell_shows_only_its_own_output(body):
    with Session("frames") as session:
        first = session.execute(f"BODY = {BODIES[body].decode()}\n{WRITE_FRAME}")
        assert first.status == "killed", first
        assert "broke the session protocol" in first.message, first.message
        out = []
        second = session.execute("print('second')",
                                 on_output=lambda kind, content: out.append((kind, content)))
        assert second.status == "ok", second
        assert out == [("stream", {"name": "stdout", "text": "second\n"})]
        third = session.execute("print('third')")           # and it stays in step
        assert third.status == "ok"
