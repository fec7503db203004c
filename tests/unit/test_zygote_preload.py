"""The zygote's preloads are passed in (issue 16, contract 2): the call that
starts the shared zygote decides what it imports; later calls return it."""
import ast
import pathlib

import pytest

from sandbox_kernel.runtime import zygote


@pytest.fixture
def fresh_shared(monkeypatch):
    monkeypatch.setattr(zygote, "_shared", None)
    yield
    if zygote._shared is not None:
        zygote._shared.close()


def test_the_starting_call_decides_the_preload_and_later_calls_share_it(fresh_shared):
    first = zygote.shared(preload=("json",))
    assert first.preload == ("json",)
    assert zygote.shared() is first
    assert zygote.shared(preload=("csv",)) is first
    assert first.preload == ("json",)


def test_a_zygote_started_again_after_a_death_keeps_its_preload(fresh_shared):
    first = zygote.shared(preload=("json",))
    first.process.kill()
    first.close()
    again = zygote.shared()
    assert again is not first and again.alive()
    assert again.preload == ("json",)


def test_by_default_the_zygote_preloads_nothing(fresh_shared):
    assert zygote.shared().preload == ()


def test_the_zygote_module_names_no_module_above_the_runtime():
    source = pathlib.Path(zygote.__file__).read_text()
    strings = [node.value for node in ast.walk(ast.parse(source))
               if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    above = ("sandbox_kernel.session", "sandbox_kernel.kernel", "sandbox_kernel.magics")
    assert not [s for s in strings if s.startswith(above)]
