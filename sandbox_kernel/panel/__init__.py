"""The side panel: comm target ``sandbox_kernel.stats`` and the built labextension.

    channel.py    StatsChannel: what the sandbox kernel and the magics call
                  (register, announce, cell_started, cell_finished, close)
    messages.py   the messages on the comm: the stats contract in an envelope
    labextension/ the built JupyterLab 4 / Notebook 7 extension (from ../../labextension,
                  by ``npm run build:prod`` there; installed by the wheel as
                  share/jupyter/labextensions/sandbox-kernel-panel)

Importing this package imports nothing of ipykernel.
"""
from .channel import NullStatsChannel, StatsChannel, channel_for_shell
from .messages import PROTOCOL_VERSION, TARGET

LABEXTENSION_NAME = "sandbox-kernel-panel"

__all__ = ["LABEXTENSION_NAME", "NullStatsChannel", "PROTOCOL_VERSION", "StatsChannel", "TARGET",
           "channel_for_shell"]
