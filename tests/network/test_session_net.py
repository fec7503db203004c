"""--net bridge in a sandbox-kernel notebook (issue 21), run by nbclient as
CI and nbconvert run one: the kernel installed with --net bridge --allow
pypi.org,files.pythonhosted.org pip-installs from the fake index; curl of
example.com and of the fake server's raw address fail, and the footer names
those refusals; installed with no --allow, nothing leaves; and the notebook
cannot widen the allowlist the kernel's installer gave.

Everything goes to the fake internet of conftest.py (a namespace the test
makes, 198.18.0.0/15): nothing leaves this machine."""
from __future__ import annotations

import inspect

import nbformat
import pytest
from nbclient import NotebookClient

from sandbox_kernel.kernel import install
from sandbox_kernel.session.registry import Sessions

# the faces hand --allow and --rate to the sessions through the lead's glue
# (/work/notes/net_s_glue.patch: registry, client, figures, magics, kernel, settings)
pytestmark = pytest.mark.skipif("allow" not in inspect.signature(Sessions.open).parameters,
                                reason="the sessions do not take --allow yet (the glue of "
                                       "registry.py and client.py is not applied)")
STATS_MIME = "application/vnd.sandbox-kernel.stats+json"
PYPI = "pypi.org,files.pythonhosted.org"
KERNEL = "sbk-net-test"

PIP = """
import subprocess, sys
done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-cache-dir",
                       "--disable-pip-version-check", "--target", "/tmp/site",
                       "--index-url", "{index}", "--trusted-host", "pypi.org",
                       "--trusted-host", "files.pythonhosted.org", "sbk-fake-pkg"],
                      capture_output=True, text=True, timeout=120)
print(done.returncode, done.stdout[-1500:], done.stderr[-1500:])
sys.path.insert(0, "/tmp/site")
import sbk_fake_pkg
print("VALUE", sbk_fake_pkg.VALUE)
"""
CURL = """
import subprocess
for url in {urls!r}:
    done = subprocess.run(["curl", "-sS", "--max-time", "4", "-o", "/dev/null", url],
                          capture_output=True, text=True, timeout=30)
    print("CURL", url, "exit", done.returncode, done.stderr.strip()[:200])
"""


@pytest.fixture
def kernel(net_env, tmp_path, monkeypatch):
    """Installs the sandbox kernel with these settings (footer as an output,
    read below); yields a function that runs cells in a fresh notebook."""
    data = tmp_path / "jupyter"
    monkeypatch.setenv("JUPYTER_PATH", str(data))

    def run(settings: dict, cells: list[str]) -> list:
        spec = install.kernel_json(install.checked_settings(settings), footer="output")
        install.write_kernelspec(str(data / "kernels" / KERNEL), spec)
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
        NotebookClient(notebook, timeout=240, kernel_name=KERNEL, allow_errors=True,
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
        return [cell.outputs for cell in notebook.cells]
    return run


def text(outputs) -> str:
    streams = [o.get("text", "") for o in outputs if o.output_type == "stream"]
    errors = [f"{o.get('ename')}: {o.get('evalue')}" for o in outputs if o.output_type == "error"]
    return "".join(streams) + "\n".join(errors)


def footer(outputs) -> tuple[dict, str]:
    shown = next(o.data for o in outputs if STATS_MIME in o.get("data", {}))
    return shown[STATS_MIME], shown["text/plain"]


def test_pip_works_and_the_refusals_are_named_in_the_footer(kernel, net_env):
    raw = f"http://{net_env.raw_ip}/"
    outputs = kernel({"net": "bridge", "allow": PYPI, "memory": "1G"}, [
        PIP.format(index=net_env.index_url),
        CURL.format(urls=["http://example.com/", raw]),
    ])
    assert "VALUE 42" in text(outputs[0]), text(outputs[0])
    contract, _ = footer(outputs[0])
    assert contract["network"] == {"mode": "bridge", "allow": PYPI.split(","), "rate": None}
    assert contract["cell"]["net_rx"] > 0 and contract["cell"]["net_tx"] > 0

    curls = text(outputs[1])
    assert curls.count("CURL") == 2 and "exit 0" not in curls, curls
    contract, words = footer(outputs[1])
    refused = {(e["destination"], e["protocol"]) for e in contract["cell"]["net_refusals"]}
    assert ("example.com", "dns") in refused, contract
    assert (net_env.raw_ip, "tcp") in refused, contract
    assert contract["cell"]["net_refused"] >= 2
    assert "example.com (name not allowed)" in words and f"{net_env.raw_ip} tcp/80" in words, words


def test_no_allow_nothing_leaves(kernel, net_env):
    outputs = kernel({"net": "bridge", "memory": "1G"}, [
        CURL.format(urls=["http://pypi.org/", f"http://{net_env.addresses['pypi.org']}/",
                          f"http://{net_env.raw_ip}/"]),
    ])
    curls = text(outputs[0])
    assert curls.count("CURL") == 3 and "exit 0" not in curls, curls
    contract, words = footer(outputs[0])
    assert contract["network"]["allow"] == [] and contract["cell"]["net_refused"] >= 3, contract
    assert "pypi.org (name not allowed)" in words, words


def test_the_notebook_cannot_widen_the_kernels_allowlist(kernel, net_env):
    outputs = kernel({"net": "bridge", "allow": PYPI, "memory": "1G"}, [
        "%container limits --allow example.com",
        "%container limits --allow '*'",
    ])
    for cell in outputs:
        said = text(cell)
        assert "refused by the classroom policy" in said and "--may-allow" in said, said
