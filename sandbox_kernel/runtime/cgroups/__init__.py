"""cgroups: one interface (base.py), drivers for v2, v1 and none; detect_driver() picks one.

    from sandbox_kernel.runtime.cgroups import detect_driver
    from sandbox_kernel.runtime.spec import Limits

    driver = detect_driver()                  # driver.version, driver.reason
    group = driver.create("sbk-demo", Limits(memory=256 << 20, cpus=0.5, pids=64))
    try:
        group.add(pid)
        print(group.stats().memory_peak)
    finally:
        group.destroy()
"""
from .base import PREFIX, Cgroup, CgroupDriver, CgroupError
from .detect import detect_driver

__all__ = ["detect_driver", "Cgroup", "CgroupDriver", "CgroupError", "PREFIX"]
