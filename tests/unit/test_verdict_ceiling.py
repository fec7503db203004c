"""An out-of-memory verdict names the limit that was hit: the container's own, or the
user's ceiling (all their kernels and containers together), never a wrong one."""
from sandbox_kernel.runtime.spec import Limits
from sandbox_kernel.session.verdicts import at_limit

MiB, GiB = 1 << 20, 1 << 30


def test_the_ceiling_is_named_when_the_container_was_far_below_its_own_limit():
    # the classroom case: a trusted kernel's 2 GiB limit, a 384 MiB ceiling, peak 175.6 MiB
    words = at_limit(Limits(memory=2 * GiB), peak=int(175.6 * MiB), ceiling=384 * MiB)
    assert "384 MiB ceiling" in words and "2 GiB" not in words


def test_the_ceiling_is_named_for_a_container_without_a_limit():
    assert "1 GiB ceiling" in at_limit(Limits(), peak=None, ceiling=GiB)


def test_the_containers_own_limit_when_it_was_reached_below_the_ceiling():
    assert at_limit(Limits(memory=256 * MiB), peak=256 * MiB, ceiling=4 * GiB) == " at the 256 MiB limit"


def test_other_kernels_filled_the_ceiling():
    # this container used little of its 1 GiB; the user's other kernels took the rest of 4 GiB
    assert "4 GiB ceiling" in at_limit(Limits(memory=GiB), peak=100 * MiB, ceiling=4 * GiB)


def test_without_a_ceiling_as_before():
    assert at_limit(Limits(memory=GiB), peak=100 * MiB, ceiling=None) == " at the 1 GiB limit"
    assert "no memory limit was set" in at_limit(Limits(), ceiling=None)
