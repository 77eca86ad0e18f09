"""Test configuration: deterministic Hypothesis everywhere, a CI profile with fewer examples."""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", derandomize=True, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def _head() -> str | None:
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "--verify", "HEAD"],
            capture_output=True,
            text=True,
            cwd=os.path.dirname(__file__),
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


_HEAD = _head()


@pytest.fixture(autouse=True)
def _clean_commit(monkeypatch):
    """The runs a test makes name this checkout's HEAD as a clean commit, so that what a test
    asserts about reruns does not depend on uncommitted edits in a developer's tree (the
    runner reruns records of a dirty tree). Tests of the provenance itself set or delete
    $QSGD_COMMIT themselves."""
    from ablations import provenance

    if _HEAD and "QSGD_COMMIT" not in os.environ:
        monkeypatch.setenv("QSGD_COMMIT", _HEAD)
    provenance.commit_info.cache_clear()
    yield
    provenance.commit_info.cache_clear()


@pytest.fixture
def one_thread():
    """torch at one thread for the test, as the runner's CPU workers run (where the CPU paths'
    bit-for-bit equalities are stated), restored after it."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
