"""The stats contract: one JSON shape for the footer, the side panel and
``usage_request`` replies (docs/architecture.md, "The stats contract"), and
the footer drawn from it.

    {"session": "default", "image": "host",
     "limits": {"memory": 268435456, "cpus": 1.0, "pids": 64, "timeout": 30.0},
     "cell": {"execution_count": 3, "wall": 0.21, "cpu_user": 0.18, "cpu_system": 0.02,
              "memory_current": 52428800, "memory_peak": 61865984, "memory_limit": 268435456,
              "pids_current": 2, "pids_peak": 3, "pids_limit": 64,
              "io_read": 0, "io_write": 4096, "net_rx": 0, "net_tx": 0,
              "net_refused": 2, "net_refusals": [
                  {"destination": "example.com", "names": ["example.com"], "protocol": "dns",
                   "port": 53, "count": 1},
                  {"destination": "198.51.100.7", "names": [], "protocol": "tcp",
                   "port": 80, "count": 1}],
              "oom_kills": 0, "throttled_time": 0.0,
              "disk_used": 12582912, "disk_limit": 536870912, "status": "ok"}}

Units: bytes, seconds, cores.  In ``limits`` null means "no limit".  In
``cell`` null means "the host cannot tell", never 0: a figure is only a
number when it was measured.  cpu, io, net, oom_kills and throttled_time
are what the cell added (the counters are cumulative: after minus before);
memory and pids peaks are the cell's own, reset before it where the cgroup
allows, else null.  ``disk_used`` and ``disk_limit`` are the writable
layer's (/tmp, the fresh /workspace, image writes) bytes at the cell's end
and its size: --disk, at most half the memory limit where its files count
as memory (runtime/rootfs.py ``layer_size``).  ``status`` is ok, error,
timeout, oom or killed.

The network (issue 21).  ``net_rx``/``net_tx``: bytes received and sent
(``--net bridge``: the veth's counters, the same figures ``top`` shows; the
host's network: null).  ``net_refused``: the connections and lookups the
session's allowlist refused during the cell (null where nothing filters: net
none or host).  ``net_refusals``: those refusals, one entry per destination
(null where nothing filters), most refused first: ``destination`` an address,
or a name the resolver would not answer (``protocol`` "dns"); ``names`` the
names looked up that led there (a raw address: none); ``port`` null for a
protocol without ports; ``count`` how many in the cell.  The optional key
``network`` ({"mode": "bridge", "allow": [...], "rate": bits/s or null})
says what the session may reach (``network_dict``).

Optional keys: ``warnings`` (see build_stats) and ``"trusted_output": true``
when the session passes the container's display data to the browser as it is
(``Session.trust_output``); absent, the output was made inert (sanitize.py).

Pure functions and one frozen record (SessionSnapshot): nothing here reads
the host, and nothing of the project is imported (the panel imports this
module and only this one).
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass

MIME_TYPE = "application/vnd.sandbox-kernel.stats+json"
STATUSES = ("ok", "error", "timeout", "oom", "killed")
CELL_FIELDS = (
    "execution_count", "wall", "cpu_user", "cpu_system",
    "memory_current", "memory_peak", "memory_limit",
    "pids_current", "pids_peak", "pids_limit", "pids_refused",
    "io_read", "io_write", "net_rx", "net_tx", "net_refused", "net_refusals",
    "oom_kills", "throttled_time", "disk_used", "disk_limit", "status",
    "memory_pressure",   # the cell crossed the pressure threshold (session/pressure_watch.py);
)                        # false: watched, not crossed; null: not watched (no limit, no cgroup)
CUMULATIVE = ("cpu_user", "cpu_system", "io_read", "io_write", "oom_kills", "throttled_time",
              "pids_refused",   # forks and threads the pids limit refused (pids.events "max")
              "net_refused")    # connections and lookups the allowlist refused
LEVELS = ("memory_current", "memory_limit", "pids_current", "pids_limit", "disk_used", "disk_limit")
PEAKS = ("memory_peak", "pids_peak")


@dataclass(frozen=True)
class SessionSnapshot:
    """A session as a reader outside it sees it, every field read at once
    under the session's state lock (Session.snapshot()): the side panel's
    ticker thread and a cell's thread never read /proc/PID/net/dev together,
    and the panel needs nothing else of a session.

    ``limits``: the session's runtime ``Limits`` (runtime/spec.py; not
    imported here, so that the panel, which imports only this module, pulls
    in nothing of the runtime).  ``state``: "running", "paused" (frozen:
    session/pausing.py), "not started", "stopped", "starting", ...  ``uptime``: seconds since its container
    started, None when none has.  ``counters``: what Session._counters()
    returns (CgroupStats.as_dict() plus net_rx/net_tx), None when no
    container runs.  ``warnings``: the container's (limits no cgroup
    enforces), empty when none runs."""
    name: str
    image: str
    network: str
    limits: "Limits"  # noqa: F821 -- runtime.spec.Limits, deliberately not imported (see above)
    state: str
    uptime: float | None
    execution_count: int
    counters: dict | None
    trust_output: bool
    warnings: tuple[str, ...]


def limits_dict(limits) -> dict:
    """The contract's ``limits`` from a runtime ``Limits`` (timeout: per cell)."""
    return {"memory": limits.memory, "cpus": limits.cpus, "pids": limits.pids,
            "timeout": limits.timeout}


def delta(before, after):
    """after - before for a cumulative counter; None when either is unknown.
    A counter that went backwards (a fresh container) counts from 0."""
    if before is None or after is None:
        return None
    value = after - before if after >= before else after
    return round(value, 6) if isinstance(value, float) else value


def cell_figures(before: dict | None, after: dict | None, *, peaks_reset: bool) -> dict:
    """Per-cell figures from two snapshots of counters (CgroupStats.as_dict()
    plus net_rx/net_tx, and net_refused/net_refusals where an allowlist
    filters: net_counters).  ``before`` None: a cell with no baseline, so the
    cumulative figures are the container's totals."""
    after = after or {}
    figures = {}
    for key in CUMULATIVE + ("net_rx", "net_tx"):
        if before is None:
            figures[key] = after.get(key)
        else:
            figures[key] = delta(before.get(key), after.get(key))
    for key in LEVELS:
        figures[key] = after.get(key)
    for key in PEAKS:
        figures[key] = after.get(key) if peaks_reset else None
    figures["net_refusals"] = refusals_delta((before or {}).get("net_refusals"),
                                             after.get("net_refusals"))
    return figures


# -- the network's refusals ------------------------------------------------------

DNS = "dns"      # the protocol of a lookup the session's resolver refused


def refusal(destination: str, protocol: str, port, count: int, names=()) -> dict:
    """One entry of ``net_refusals``: plain JSON, the names sorted."""
    return {"destination": str(destination), "names": sorted({str(n) for n in names}),
            "protocol": str(protocol), "port": None if port is None else int(port),
            "count": int(count)}


def net_counters(net_stats) -> dict:
    """The counters' network keys from the runtime's ``NetStats`` of a
    bridged container (runtime/net_bridge.py; read by attribute, not
    imported): rx/tx bytes and the refusals, cumulative as the cgroup's
    counters are.  A connection refused keeps the names the container looked
    up that led to its address; a name the resolver would not answer is an
    entry of protocol "dns" whose destination is the name (lookups come
    collapsed: one each)."""
    entries = [refusal(r.destination, r.protocol, r.port, r.count, r.names)
               for r in net_stats.refused or () if r.count]
    entries += [refusal(lookup.name, DNS, 53, 1, (lookup.name,))
                for lookup in dict.fromkeys(net_stats.lookups or ()) if not lookup.allowed]
    return {"net_rx": net_stats.rx_bytes, "net_tx": net_stats.tx_bytes,
            "net_refused": sum(entry["count"] for entry in entries),
            "net_refusals": _most_first(entries)}


def _key(entry: dict) -> tuple:
    return entry["destination"], entry["protocol"], entry["port"]


def refusals_delta(before, after) -> list | None:
    """The refusals counted between two snapshots of ``net_refusals`` (each
    cumulative); None when ``after`` is unknown.  An entry whose count went
    backwards (a fresh container) counts from 0."""
    if after is None:
        return None
    earlier = {_key(entry): entry["count"] for entry in before or ()}
    entries = []
    for entry in after:
        count = delta(earlier.get(_key(entry), 0), entry["count"])
        if count:
            entries.append({**entry, "count": count})
    return _most_first(entries)


def _most_first(entries: list) -> list:
    return sorted(entries, key=lambda e: (-e["count"], e["destination"], e["protocol"], e["port"] or 0))


def network_words(mode: str, allow=None, rate=None) -> str:
    """A session's network as %container status says it: 'none', 'host',
    'bridge (allow pypi.org, files.pythonhosted.org; rate 10 Mbit/s)'."""
    if mode != "bridge":
        return str(mode)
    names = list(allow or ())
    allowed = "any destination" if names == ["*"] else (", ".join(names) or "nothing")
    return f"bridge (allow {allowed}; rate {format_rate(rate) if rate else 'no limit'})"


def network_dict(mode: str, allow=None, rate=None) -> dict:
    """The contract's optional ``network``: the mode, the allowlist (a list;
    ["*"]: any destination; []: none) and the rate in bits/s (null: none)."""
    return {"mode": str(mode), "allow": None if allow is None else list(allow), "rate": rate}


def build_stats(*, session: str, image: str, limits, execution_count: int | None,
                wall: float | None, figures: dict, status: str | None,
                warnings: list[str] | None = None, trusted_output: bool = False,
                network: dict | None = None) -> dict:
    """The contract dict.  ``figures`` holds the cell fields (see cell_figures);
    absent ones are null.  ``warnings`` (optional key, a list of sentences):
    what the user must know about the figures, such as limits that no cgroup
    enforces (a rootless container without a delegated cgroup).
    ``trusted_output`` (optional key, only when true): the container's display
    data reached the browser unsanitised; the footer says "output trusted".
    ``network`` (optional key): network_dict's, for a bridged session."""
    if status is not None and status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    cell = {key: figures.get(key) for key in CELL_FIELDS}
    cell.update(execution_count=execution_count, wall=wall, status=status)
    stats = {"session": session, "image": image, "limits": limits_dict(limits), "cell": cell}
    if warnings:
        stats["warnings"] = list(warnings)
    if trusted_output:
        stats["trusted_output"] = True
    if network is not None:
        stats["network"] = network
    return stats


# -- the footer ----------------------------------------------------------------

NA = "n/a"


def format_bytes(n) -> str:
    if n is None:
        return NA
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


def format_seconds(s) -> str:
    if s is None:
        return NA
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.2f} s"
    minutes, seconds = divmod(s, 60)
    return f"{minutes:.0f} min {seconds:.0f} s"


def _of(value: str, limit: str | None) -> str:
    return value if limit is None else f"{value} / {limit}"


def footer_parts(stats: dict) -> list[tuple[str, str]]:
    """(label, text) pairs of the footer, in order; shared by text and HTML."""
    cell, limits = stats.get("cell") or {}, stats.get("limits") or {}
    memory_limit = cell.get("memory_limit", limits.get("memory"))
    pids_limit = cell.get("pids_limit", limits.get("pids"))
    mem = format_bytes(cell.get("memory_current"))
    if cell.get("memory_peak") is not None:
        mem += f" (peak {format_bytes(cell.get('memory_peak'))})"
    cpu = f"{format_seconds(cell.get('cpu_user'))} user, {format_seconds(cell.get('cpu_system'))} sys"
    if cell.get("throttled_time"):
        cpu += f", throttled {format_seconds(cell['throttled_time'])}"
    pids = _fmt_count(cell.get("pids_current"))
    if cell.get("pids_peak") is not None:
        pids += f" (peak {cell['pids_peak']})"
    if cell.get("pids_refused"):
        pids += f", {cell['pids_refused']} refused at the limit"
    parts = [
        ("container", f"{stats.get('session', '?')} [{stats.get('image', '?')}]"),
        ("status", str(cell.get("status") or NA)),
        ("wall", format_seconds(cell.get("wall"))),
        ("cpu", cpu + (f" / {limits['cpus']:g} cpus" if limits.get("cpus") else "")),
        ("mem", _of(mem, format_bytes(memory_limit) if memory_limit is not None else None)),
        ("pids", _of(pids, str(pids_limit) if pids_limit is not None else None)),
        ("io", f"r {format_bytes(cell.get('io_read'))} w {format_bytes(cell.get('io_write'))}"),
        ("net", _net_text(stats)),
    ]
    if cell.get("net_refused"):
        parts.append(("refused", refusals_text(cell["net_refused"], cell.get("net_refusals"))))
    if cell.get("disk_used") is not None or cell.get("disk_limit") is not None:
        parts.append(("disk", _disk_share(cell)))
    if stats.get("notebook_dir"):
        parts.append(("dir", str(stats["notebook_dir"])))
    if cell.get("oom_kills"):
        parts.append(("oom kills", str(cell["oom_kills"])))
    if stats.get("trusted_output") is True:
        parts.append(("output", "trusted"))
    parts += [("warning", str(text)) for text in stats.get("warnings") or ()]
    return parts


def _net_text(stats: dict) -> str:
    """'rx 1.2 MiB tx 3 KiB', and the bridge's rate when there is one."""
    cell = stats.get("cell") or {}
    text = f"rx {format_bytes(cell.get('net_rx'))} tx {format_bytes(cell.get('net_tx'))}"
    rate = (stats.get("network") or {}).get("rate")
    return f"{text} at {format_rate(rate)}" if isinstance(rate, int) and rate > 0 else text


def format_rate(bits) -> str:
    """Bits per second as tc and --rate say them: 10 Mbit/s, 1.5 Gbit/s, 800 kbit/s."""
    if bits is None:
        return NA
    for unit, scale in (("Gbit/s", 10 ** 9), ("Mbit/s", 10 ** 6), ("kbit/s", 10 ** 3)):
        if bits >= scale:
            value = bits / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{bits} bit/s"


REFUSALS_SHOWN = 4
"""The footer names this many refused destinations, then says how many more."""


def refusal_text(entry: dict) -> str:
    """'example.com (name not allowed)', '198.51.100.7 tcp/80 x3',
    '151.101.0.223 (pypi.org) tcp/443'."""
    count = entry.get("count") or 0
    if entry.get("protocol") == DNS:
        text = f"{entry.get('destination')} (name not allowed)"
    else:
        names = entry.get("names") or []
        text = str(entry.get("destination"))
        text += f" ({', '.join(map(str, names))})" if names else ""
        text += f" {entry.get('protocol')}" + (f"/{entry['port']}" if entry.get("port") is not None else "")
    return text + (f" x{count}" if count > 1 else "")


def refusals_text(total, entries) -> str:
    """The footer's "refused" part: how many, then who ('3: example.com
    (name not allowed), 198.51.100.7 tcp/80 x2')."""
    entries = list(entries or ())
    named = [refusal_text(entry) for entry in entries[:REFUSALS_SHOWN]]
    if len(entries) > REFUSALS_SHOWN:
        named.append(f"{len(entries) - REFUSALS_SHOWN} more")
    return f"{total}: {', '.join(named)}" if named else str(total)


def _disk_share(cell: dict) -> str:
    """'12 MiB / 512 MiB' of the writable layer, with --disk named when it is
    full: a full layer fails writes with ENOSPC, and --disk is what to raise."""
    used, limit = cell.get("disk_used"), cell.get("disk_limit")
    text = _of(format_bytes(used), format_bytes(limit) if limit is not None else None)
    if disk_full(used, limit):
        text += " full (--disk)"
    return text


DISK_FULL_MARGIN = 1 << 20
"""A layer with less than this free is full: a write of a few pages fails."""


def disk_full(used, limit) -> bool:
    """True when the writable layer has less than DISK_FULL_MARGIN (or 1 %)
    left; False when either figure is unknown."""
    if used is None or limit is None:
        return False
    return limit > 0 and limit - used < max(DISK_FULL_MARGIN, limit // 100)


def _fmt_count(n) -> str:
    return NA if n is None else str(n)


def footer_text(stats: dict) -> str:
    """One line for terminals and nbconvert."""
    return " | ".join(f"{label} {text}" for label, text in footer_parts(stats))


_STATUS_COLOURS = {"ok": "#2e7d32", "error": "#c62828", "timeout": "#ef6c00",
                   "oom": "#c62828", "killed": "#c62828"}


def footer_html(stats: dict) -> str:
    """One compact line that wraps to the width it is given (a long path or
    warning included); every value is escaped (the session name is the user's)."""
    status = (stats.get("cell") or {}).get("status")
    cells = []
    for label, text in footer_parts(stats):
        style = f' style="color:{_STATUS_COLOURS[status]}"' if label == "status" and status in _STATUS_COLOURS else ""
        cells.append(f'<span{style}><b>{html.escape(label)}</b> {html.escape(text)}</span>')
    return ('<div class="sandbox-kernel-stats" style="font-family:monospace;font-size:11px;'
            'opacity:0.75;white-space:normal;overflow-wrap:anywhere;max-width:100%">'
            + " &middot; ".join(cells) + "</div>")


FOOTER_ONLY = ("notebook_dir",)
"""Keys the footer shows that are not the contract's: its JSON leaves them out."""


def with_notebook_dir(stats: dict, text: str | None) -> dict:
    """The stats with the footer-only key ``notebook_dir``: the working
    directory and how it is mounted, short ("/home/u/course rw", "... ro",
    "... ro+overlay": read-only, writes stay in the container; "none"),
    for the footer's "dir" part.  Not in the footer's JSON: the contract's
    shape is the side panel's and usage_request's too, which %container
    status already tells."""
    return {**stats, "notebook_dir": text} if text else stats


def footer_bundle(stats: dict) -> dict:
    """The mime bundle of the footer: text/plain, text/html and the JSON
    itself (the contract's keys only)."""
    contract = {key: value for key, value in stats.items() if key not in FOOTER_ONLY}
    return {"text/plain": footer_text(stats), "text/html": footer_html(stats),
            MIME_TYPE: json_safe(contract)}


REPLY_KEY = "sandbox_kernel"
"""Where the stats go in an execute_reply's metadata and in a cell's (contract 2)."""


def beside(stats: dict, footer: str) -> dict:
    """What the execute_reply's metadata carries under REPLY_KEY, and the
    labextension keeps in the cell's metadata: ``stats`` (the contract),
    ``footer`` (beside, output or off: the extension draws only "beside")
    and ``notebook_dir`` (the footer's "dir" words, when there are some)."""
    contract = {key: value for key, value in stats.items() if key not in FOOTER_ONLY}
    entry = {"stats": json_safe(contract), "footer": footer}
    if stats.get("notebook_dir"):
        entry["notebook_dir"] = str(stats["notebook_dir"])
    return entry


def json_safe(value):
    """NaN and infinities are not JSON: they become null, in dicts, lists
    and tuples (which become lists) too.  The footer's JSON and the side
    panel's messages go through it."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
