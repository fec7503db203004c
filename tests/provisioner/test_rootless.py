"""The provisioner as a user who is not root (tests/rootless/as-user makes
the user sbk-rootless and removes it): a wrapped bash kernel starts, its
cell runs in the container (root of its own user namespace, this user on
the host, so that it can use the connection directory the user made), and
nothing of it is left after shutdown."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

AS_USER = os.path.join(os.path.dirname(__file__), "..", "rootless", "as-user")
SCRIPT = r'''
import json, os, sys, tempfile
from sandbox_kernel.kernel import install
data = tempfile.mkdtemp()
install.install_wrapped("bash", {}, name="bash-rootless-sandboxed", prefix=data)
os.environ["JUPYTER_PATH"] = os.path.join(data, "share", "jupyter")
from jupyter_client.manager import start_new_kernel
km, kc = start_new_kernel(kernel_name="bash-rootless-sandboxed", startup_timeout=90)
texts = []
try:
    reply = kc.execute_interactive("hostname; id -u; ls /run", timeout=60, output_hook=lambda m:
                                   texts.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None)
finally:
    kc.stop_channels()
    km.shutdown_kernel(now=True)
mine = f"sbk-{os.getpid()}-"
left = [p for parent in ("/run", tempfile.gettempdir()) if os.access(parent, os.R_OK)
        for p in os.listdir(parent) if p.startswith(mine)]
print(json.dumps({"status": reply["content"]["status"], "text": "".join(texts), "left": left}))
'''


def test_a_wrapped_kernel_runs_for_a_user_who_is_not_root():
    where = tempfile.mkdtemp(prefix="sbk-prov-rootless-")
    try:
        os.chmod(where, 0o755)
        script = os.path.join(where, "run.py")
        with open(script, "w") as handle:
            handle.write(SCRIPT)
        os.chmod(script, 0o644)
        done = subprocess.run([AS_USER, sys.executable, script], capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(where, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "ok" and result["left"] == []
    assert result["text"].split() == ["sandbox", "0", "jupyter-kernel"]
