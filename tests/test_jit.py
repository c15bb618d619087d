"""The compiled kernels' cache: swept when any source of the package changes."""

from __future__ import annotations

from pathlib import Path

from episodic_koopman.jit import sweep_stale_kernels


def _cached(package: Path) -> list[str]:
    return sorted(p.name for p in package.rglob("__pycache__/*.nb*"))


def test_cached_kernels_are_swept_when_any_source_changes(tmp_path):
    package = tmp_path / "pkg"
    (package / "__pycache__").mkdir(parents=True)
    (package / "caller.py").write_text("x = 1\n")
    (package / "helper.py").write_text("y = 2\n")
    stamp = package / "__pycache__" / "kernels.stamp"

    def cache_some() -> None:
        for name in ("caller.f-3.py311.nbi", "caller.f-3.py311.1.nbc"):
            (package / "__pycache__" / name).write_bytes(b"code")

    cache_some()
    assert sweep_stale_kernels(package, stamp)  # never stamped: nothing is trusted
    assert _cached(package) == []
    cache_some()
    assert not sweep_stale_kernels(package, stamp)  # unchanged sources keep their kernels
    assert len(_cached(package)) == 2
    (package / "helper.py").write_text("y = 3  # a callee changed, not the caller\n")
    assert sweep_stale_kernels(package, stamp)
    assert _cached(package) == []
    assert not sweep_stale_kernels(package, stamp)


def test_a_package_whose_stamp_cannot_be_written_is_left_alone(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("x = 1\n")
    stamp = tmp_path / "missing-dir" / "sub" / "kernels.stamp"  # mkdir without parents fails
    assert not sweep_stale_kernels(package, stamp)
