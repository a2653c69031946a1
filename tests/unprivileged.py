"""Run a command where permission bits bite, although tests and CI run as root.

Root passes every permission check through two capabilities, CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH. `run_unprivileged` starts a subprocess with both dropped from its
bounding set, so a mode-000 model directory, a read-only `--out` or an unusable history
file fail for it as they would for any user (files stay root's, so no chown is needed).
When we are not root the subprocess simply runs as we are. `skip_reason()` says why
this is impossible here, for `pytest.skip`.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import tempfile

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def _drop_capabilities() -> None:  # runs in the child, between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_unprivileged(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run(args, **kwargs)` without the power to ignore permission bits.

    Defaults: text output captured, a 120 s timeout."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 120)
    preexec = _drop_capabilities if os.geteuid() == 0 else None
    return subprocess.run(args, preexec_fn=preexec, **kwargs)


def skip_reason() -> str | None:
    """None when permission bits bite in `run_unprivileged`, else why they cannot."""
    with tempfile.TemporaryDirectory() as tmp:
        locked = os.path.join(tmp, "locked")
        os.mkdir(locked, 0)
        try:
            probe = run_unprivileged([sys.executable, "-c", f"import os; os.listdir({locked!r})"])
        except OSError as e:
            return f"cannot drop root's file capabilities here ({e})"
        finally:
            os.chmod(locked, 0o700)
    if probe.returncode == 0:
        return "a mode-000 directory stays readable here even without CAP_DAC_OVERRIDE"
    if "PermissionError" not in probe.stderr:
        return f"the probe failed for another reason: {probe.stderr[-200:]}"
    return None
