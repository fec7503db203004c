"""What a kernel's containers are for: the kernel's id comes from its connection file."""
from sandbox_kernel.session import labels


def test_the_kernel_id_is_read_from_a_jupyter_servers_connection_file():
    path = "/home/ann/.local/share/jupyter/runtime/kernel-2be85e7e-e1bb-40af-8aec-812173c5939c.json"
    assert labels.kernel_id_of(path) == "2be85e7e-e1bb-40af-8aec-812173c5939c"


def test_a_connection_file_of_another_shape_gives_no_id():
    assert labels.kernel_id_of("/tmp/tmpsuzmfd7q.json") is None
    assert labels.kernel_id_of(None) is None


def test_a_session_adds_its_name_to_the_process_labels(monkeypatch):
    monkeypatch.setattr(labels, "PROCESS_LABELS", {})
    labels.label_process(kind="kernel", kernel_id=None)   # None: not said
    assert dict(labels.for_session("grading")) == {"kind": "kernel", "session": "grading"}
