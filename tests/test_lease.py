"""The pieces of a cluster run that need no cluster: the driver's lease fencing publishes, the
cleanup of killed writers' temporary folders, a worker refusing a plan it cannot run, and
addresses the install cannot serve."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
from scene_helpers import smooth_s2, write_raster

from copgen_rt import specs
from copgen_rt.errors import InputError, LeaseLostError, MissingDependencyError
from copgen_rt.files import Staging, fenced, write_text
from copgen_rt.plan import check_runs_here, resolve
from copgen_rt.runs import lease as lease_module
from copgen_rt.runs.lease import Lease, check_lease, release_leases_of
from copgen_rt.runs.ray_workers import check_address
from copgen_rt.scenes.inputs.open import open_input
from copgen_rt.scenes.job import SceneJob, SceneOptions
from copgen_rt.scenes.state import remove_leftover_staging


def test_a_released_or_stale_lease_stops_every_publish(tmp_path, monkeypatch):
    with Lease(tmp_path) as lease:
        check_lease(str(lease.path))  # held: publishing goes on
        with fenced(lambda: check_lease(str(lease.path))), Staging(tmp_path) as staging:
            staging.file("a.txt").write_text("a")
            staging.publish("a.txt", tmp_path / "a.txt")
            monkeypatch.setattr(lease_module, "LEASE_TIMEOUT_S", 0.0)
            time.sleep(0.01)
            with pytest.raises(LeaseLostError, match="not refreshed"):
                write_text(tmp_path / "b.txt", "b")
            monkeypatch.setattr(lease_module, "LEASE_TIMEOUT_S", 30.0)
            release_leases_of(os.getpid(), tmp_path)  # what the parent does when Ray ends the driver
            staging.file("c.txt").write_text("c")
            with pytest.raises(LeaseLostError, match="was released"):
                staging.publish("c.txt", tmp_path / "c.txt")
    assert (tmp_path / "a.txt").exists() and not (tmp_path / "b.txt").exists()
    assert not (tmp_path / "c.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no temporary file, no lease


def test_the_lock_holder_removes_what_killed_writers_left(tmp_path):
    def job_of(name: str) -> SceneJob:
        scene = write_raster(tmp_path / name, smooth_s2(64, 64))
        return SceneJob(specs.get("copgen-demo"), [open_input(scene)], tmp_path, SceneOptions(steps=1))

    job, other = job_of("s1.tif"), job_of("s1.x.tif")  # one stem starts with the other's
    left = Staging(tmp_path, job.staging_prefix)  # a worker killed mid-write leaves it
    (left.path / "s1_DEM_DEM.tif.partial.tif").write_bytes(b"")
    running = Staging(tmp_path, other.staging_prefix)  # another scene's, still writing
    remove_leftover_staging(job)
    assert not left.path.exists() and running.path.exists()


def test_a_worker_refuses_a_plan_it_cannot_run():
    plan = resolve(specs.get("copgen-demo"), "cpu", "torch", "fp32")
    check_runs_here(plan)  # this machine made it: it runs it
    cuda = plan.__class__(**{**plan.__dict__, "device": "cuda:7"})
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="cuda:7, which this machine lacks"):
            check_runs_here(cuda)


def test_ray_client_addresses_need_ray_client(monkeypatch):
    from copgen_rt.runs import ray_workers

    monkeypatch.setattr(ray_workers, "_serves_ray_client", lambda: False)
    with pytest.raises(MissingDependencyError, match=r"ray\[client\]"):
        check_address("ray://head:10001")
    with pytest.raises(ValueError, match=r"HOST:PORT or auto\)") as e:
        check_address("scene.tif")
    assert "ray://" not in str(e.value)  # not suggested where it cannot work
    check_address("head:6379")


def test_the_lease_is_named_by_its_process(tmp_path):
    lease = Lease(tmp_path)
    assert lease.path.name.startswith(f".copgen-lease-{os.getpid()}-")
    release_leases_of(os.getpid() + 1, tmp_path)
    assert lease.path.exists()
    lease.close()
    assert not Path(lease.path).exists()


def test_a_worker_of_another_version_refuses_to_start():
    import dataclasses

    from copgen_rt.demo import demo_weights
    from copgen_rt.runs.ray_workers import SceneWorker
    from copgen_rt.runs.source import PipelineSource

    demo = specs.get("copgen-demo")
    source = PipelineSource.create(demo, demo_weights(), None, resolve(demo, "cpu", "torch", "fp32"))
    worker = SceneWorker(dataclasses.replace(source, software="copgen-rt 0.0.1"), 1, None)
    with pytest.raises(MissingDependencyError, match="the driver copgen-rt 0.0.1"):
        worker.warm()
    assert worker.pipeline is None  # refused before loading anything
