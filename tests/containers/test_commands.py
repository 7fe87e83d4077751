"""Pure command builders: build_command, wrap_command, forwarded_env, engine choice, baking."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from glamhpc import containers as c

from .conftest import make_hub_model


def which_of(*names: str):
    return lambda name: f"/opt/bin/{name}" if name in names else None


# ----------------------------------------------------------------------------- engines


def test_choose_engine_prefers_docker_for_builds_and_apptainer_for_runs() -> None:
    which = which_of("apptainer", "docker")
    assert c.choose_engine(None, c.BUILD_PREFERENCE, which) == "docker"
    assert c.choose_engine(None, c.RUN_PREFERENCE, which) == "apptainer"
    assert c.choose_engine("apptainer", c.BUILD_PREFERENCE, which) == "apptainer"


def test_choose_engine_errors_name_what_is_missing() -> None:
    with pytest.raises(c.ContainerError, match="no container engine found on PATH"):
        c.choose_engine(None, c.BUILD_PREFERENCE, which_of())
    with pytest.raises(c.ContainerError, match=r"'podman' is not on PATH \(found: docker\)"):
        c.choose_engine("podman", c.BUILD_PREFERENCE, which_of("docker"))
    with pytest.raises(c.ContainerError, match="unknown engine 'rkt'"):
        c.choose_engine("rkt", c.BUILD_PREFERENCE, which_of("docker"))


@pytest.mark.parametrize(
    ("image", "engine"),
    [
        ("glamhpc_0.1.0.sif", "apptainer"),
        ("/scratch/u/img.SIF", "apptainer"),
        ("oras://ghcr.io/x/y:1", "apptainer"),
        ("docker://glamhpc:0.1.0", "apptainer"),
        ("glamhpc:0.1.0", "docker"),
        ("registry.example.org/team/glamhpc:0.1.0", "docker"),
    ],
)
def test_engine_for_image(image: str, engine: str) -> None:
    assert c.engine_for_image(image) == engine


# ----------------------------------------------------------------------------- build


def test_build_command_docker() -> None:
    cmd = c.build_command(
        "docker", "site/torch:2.13.0", "glamhpc:dev", revision="abc", source="https://x/y"
    )
    assert cmd == [
        "docker",
        "build",
        "--file",
        "Dockerfile",
        "--tag",
        "glamhpc:dev",
        "--build-arg",
        "BASE_IMAGE=site/torch:2.13.0",
        "--build-arg",
        f"VERSION={c.__version__}",
        "--build-arg",
        "REVISION=abc",
        "--build-arg",
        "SOURCE=https://x/y",
        "--build-arg",
        "BAKED_MODEL=none",
        ".",
    ]


def test_build_command_defaults_and_podman() -> None:
    cmd = c.build_command("podman", bake_model="google/flan-t5-small")
    assert cmd[:2] == ["podman", "build"]
    assert f"BASE_IMAGE={c.DEFAULT_BASE_IMAGE}" in cmd
    assert c.DEFAULT_TAG in cmd
    assert "BAKED_MODEL=google/flan-t5-small" in cmd


def test_build_command_apptainer_from_base_and_from_docker() -> None:
    cmd = c.build_command("apptainer", "site/torch:2.13.0", "glamhpc:0.1.0")
    assert cmd[:2] == ["apptainer", "build"]
    assert cmd[-2:] == ["glamhpc_0.1.0.sif", c.DEF_FILE]
    assert "BOOTSTRAP=docker" in cmd and "FROM=site/torch:2.13.0" in cmd

    daemon = c.build_command("singularity", tag="out.sif", from_image="glamhpc:0.1.0")
    assert daemon[0] == "singularity"
    assert "BOOTSTRAP=docker-daemon" in daemon and "FROM=glamhpc:0.1.0" in daemon
    assert daemon[-2] == "out.sif"
    archive = c.build_command("apptainer", from_image="/tmp/glamhpc.tar")
    assert "BOOTSTRAP=docker-archive" in archive and "FROM=/tmp/glamhpc.tar" in archive
    prefixed = c.build_command("apptainer", from_image="docker-archive:///tmp/g.tar")
    assert "FROM=/tmp/g.tar" in prefixed


def test_build_command_rejects_nonsense() -> None:
    with pytest.raises(c.ContainerError, match="needs apptainer"):
        c.build_command("docker", from_image="glamhpc:0.1.0")
    with pytest.raises(c.ContainerError, match="not both"):
        c.build_command("apptainer", "base:1", from_image="glamhpc:0.1.0")
    with pytest.raises(c.ContainerError, match="unknown engine"):
        c.build_command("lxc")


@pytest.mark.parametrize(
    ("tag", "sif"),
    [("glamhpc:0.1.0", "glamhpc_0.1.0.sif"), ("a/b:c", "a_b_c.sif"), ("x.sif", "x.sif")],
)
def test_sif_name(tag: str, sif: str) -> None:
    assert c.sif_name(tag) == sif


# ----------------------------------------------------------------------------- wrap


def test_wrap_apptainer_exact() -> None:
    cmd = c.wrap_command(
        ["torchrun", "--nnodes=2", "-m", "glamhpc", "train", "cfg.yaml"],
        "/scratch/glamhpc.sif",
        binds=["/scratch/runs", "/shared/hf:/models:ro", "/scratch/runs"],
        env={"MASTER_ADDR": "n1", "MASTER_PORT": "29500", "HF_HUB_OFFLINE": "1"},
        gpus=True,
        workdir="/scratch/runs",
    )
    assert cmd == [
        "apptainer",
        "exec",
        "--nv",
        "--cleanenv",
        "--bind",
        "/scratch/runs:/scratch/runs,/shared/hf:/models:ro",
        "--pwd",
        "/scratch/runs",
        "/scratch/glamhpc.sif",
        "torchrun",
        "--nnodes=2",
        "-m",
        "glamhpc",
        "train",
        "cfg.yaml",
    ]


def test_wrap_apptainer_minimal_and_singularity() -> None:
    assert c.wrap_command(["true"], "x.sif") == ["apptainer", "exec", "--cleanenv", "x.sif", "true"]
    cmd = c.wrap_command(["true"], "x.sif", engine="singularity", cleanenv=False)
    assert cmd == ["singularity", "exec", "x.sif", "true"]


def test_wrap_docker_overrides_the_glamhpc_entrypoint() -> None:
    cmd = c.wrap_command(
        ["torchrun", "--nproc-per-node=4", "-m", "glamhpc", "train"],
        "glamhpc:0.1.0",
        binds=["/data/runs"],
        env={"RANK": "0"},
        gpus=True,
        workdir="/data/runs",
        user="1000:1000",
    )
    assert cmd == [
        "docker",
        "run",
        "--rm",
        "--network",
        "host",
        "--ipc",
        "host",
        "--gpus",
        "all",
        "--volume",
        "/data/runs:/data/runs",
        "--env",
        "RANK",
        "--workdir",
        "/data/runs",
        "--user",
        "1000:1000",
        "--entrypoint",
        "torchrun",
        "glamhpc:0.1.0",
        "--nproc-per-node=4",
        "-m",
        "glamhpc",
        "train",
    ]


def test_wrap_podman_uses_cdi_for_gpus() -> None:
    cmd = c.wrap_command(["python"], "glamhpc:0.1.0", engine="podman", gpus=True)
    assert cmd[:2] == ["podman", "run"]
    at = cmd.index("--device")
    assert cmd[at : at + 2] == ["--device", "nvidia.com/gpu=all"]
    assert "--gpus" not in cmd
    chosen = c.wrap_command(
        ["python"], "g:1", engine="podman", gpus=True, gpu_devices=["1", "3"], user="5:6"
    )
    assert chosen[chosen.index("--device") :][:4] == [
        "--device",
        "nvidia.com/gpu=1",
        "--device",
        "nvidia.com/gpu=3",
    ]
    # Rootless podman: keep-id maps the caller to the same uid inside (files stay theirs).
    assert chosen[chosen.index("--userns") :][:4] == ["--userns", "keep-id", "--user", "5:6"]


def test_wrap_docker_selects_the_allocated_gpus() -> None:
    one = c.wrap_command(["python"], "g:1", gpus=True, gpu_devices=["2"])
    assert one[one.index("--gpus") + 1] == '"device=2"'
    two = c.wrap_command(["python"], "g:1", gpus=True, gpu_devices=["GPU-1a2b", "0"])
    # Docker parses --gpus as CSV: a list needs the inner quotes or "0" is a second field.
    assert two[two.index("--gpus") + 1] == '"device=GPU-1a2b,0"'
    assert "--gpus" not in c.wrap_command(["python"], "g:1", gpu_devices=["2"])


@pytest.mark.parametrize(
    ("environ", "devices"),
    [
        ({"SLURM_STEP_GPUS": "2,3", "SLURM_JOB_GPUS": "0,1,2,3", "CUDA_VISIBLE_DEVICES": "0,1"},
         ["2", "3"]),
        ({"SLURM_JOB_GPUS": "1", "CUDA_VISIBLE_DEVICES": "0"}, ["1"]),
        ({"CUDA_VISIBLE_DEVICES": "GPU-aa, GPU-bb"}, ["GPU-aa", "GPU-bb"]),
        ({"SLURM_STEP_GPUS": "", "CUDA_VISIBLE_DEVICES": "4"}, ["4"]),
        ({"SLURM_JOB_GPUS": "NoDevFiles"}, None),
        ({}, None),
    ],
)  # fmt: skip
def test_allocated_gpus_prefers_slurm_physical_ids(
    environ: dict[str, str], devices: list[str] | None
) -> None:
    assert c.allocated_gpus(environ) == devices


def test_job_command_docker_runs_as_the_caller_with_the_allocation() -> None:
    environ = {
        "SLURM_STEP_GPUS": "2,3",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "MLFLOW_TRACKING_PASSWORD": "pw-123",
        "RANK": "0",
        "PATH": "/usr/bin",
        # Docker, whichever engines this machine's /usr/bin holds (podman only would pick podman).
        "GLAMHPC_CONTAINER_ENGINE": "docker",
    }
    job = c.job_command(
        ["python"], "glamhpc:1", environ=environ, gpus=True, uid_gid=(1234, 99), workdir="/w"
    )
    argv = job.argv
    assert argv[argv.index("--user") + 1] == "1234:99"
    assert argv[argv.index("--gpus") + 1] == '"device=2,3"'
    passed = [argv[i + 1] for i, a in enumerate(argv) if a == "--env"]
    # Inside, the two GPUs are 0 and 1: the host's numbering must not follow them in.
    assert "CUDA_VISIBLE_DEVICES" not in passed
    assert "MLFLOW_TRACKING_PASSWORD" in passed and "pw-123" not in " ".join(argv)
    assert job.env["MLFLOW_TRACKING_PASSWORD"] == "pw-123" and job.env["PATH"] == "/usr/bin"
    # Without GPUs nothing is selected; without Slurm or CUDA_VISIBLE_DEVICES: all of them.
    assert "--gpus" not in c.job_command(["python"], "glamhpc:1", environ=environ).argv
    every = c.job_command(["python"], "glamhpc:1", environ={}, gpus=True, uid_gid=(1, 1)).argv
    assert every[every.index("--gpus") + 1] == "all"


def test_job_command_apptainer_passes_values_through_the_environment() -> None:
    environ = {"MASTER_ADDR": "n1", "MLFLOW_TRACKING_TOKEN": "tok-9", "HOME": "/home/u"}
    job = c.job_command(["python"], "/img/g.sif", environ=environ, extra_env={"GLAMHPC_X": "1"})
    assert "tok-9" not in " ".join(job.argv) and "--env" not in job.argv
    assert "--user" not in job.argv  # Apptainer runs as the caller anyway
    assert job.env["APPTAINERENV_MLFLOW_TRACKING_TOKEN"] == "tok-9"
    assert job.env["APPTAINERENV_GLAMHPC_X"] == "1" and job.env["GLAMHPC_X"] == "1"
    assert "APPTAINERENV_HOME" not in job.env and job.env["HOME"] == "/home/u"


def test_job_command_tells_the_run_its_image_by_name() -> None:
    """GLAMHPC_CONTAINER(_ID) reach the trainer (it tags the MLflow run with them), by name."""
    job = c.job_command(["python"], "glamhpc:1", environ={}, image_id="sha256:ab12", uid_gid=(1, 1))
    passed = [job.argv[i + 1] for i, a in enumerate(job.argv) if a == "--env"]
    assert {"GLAMHPC_CONTAINER", "GLAMHPC_CONTAINER_ID"} <= set(passed)
    assert "sha256:ab12" not in job.argv
    assert job.env["GLAMHPC_CONTAINER"] == "glamhpc:1"
    assert job.env["GLAMHPC_CONTAINER_ID"] == "sha256:ab12"
    sif = c.job_command(["python"], "/img/g.sif", environ={})
    assert sif.env["APPTAINERENV_GLAMHPC_CONTAINER"] == "/img/g.sif"
    assert "APPTAINERENV_GLAMHPC_CONTAINER_ID" not in sif.env


def test_image_id_is_none_for_apptainer_and_for_an_engine_that_cannot_say(
    standin_env: dict,
) -> None:
    assert c.resolve_image_id("/img/g.sif", standin_env) is None
    assert c.resolve_image_id("never-built:1", standin_env) is None


def test_engine_env_prefixes() -> None:
    env = {"A": "1 2", "B": "x=y"}
    assert c.engine_env(env, "apptainer") == {"APPTAINERENV_A": "1 2", "APPTAINERENV_B": "x=y"}
    assert c.engine_env(env, "singularity") == {
        "SINGULARITYENV_A": "1 2",
        "SINGULARITYENV_B": "x=y",
    }
    assert c.engine_env(env, "docker") == env == c.engine_env(env, "podman")
    with pytest.raises(c.ContainerError, match="bad environment variable name"):
        c.engine_env({"A-B": "1"}, "docker")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"inner": []}, "inner command is empty"),
        ({"binds": ["/a,b"]}, "commas"),
        ({"binds": [":/x"]}, "bad bind"),
        ({"binds": ["/a:/b:rx"]}, "ro or rw"),
        ({"env": {"BAD-NAME": "1"}}, "bad environment variable name"),
        ({"env": ["OK", "NO=VALUE"]}, "bad environment variable name"),
        ({"image": "g:1", "gpus": True, "gpu_devices": ["0;rm"]}, "bad GPU id"),
        ({"engine": "lxc"}, "unknown engine"),
    ],
)
def test_wrap_rejects_bad_input(kwargs: dict, message: str) -> None:
    args = {"inner": ["true"], "image": "x.sif", **kwargs}
    with pytest.raises(c.ContainerError, match=message):
        c.wrap_command(**args)


@given(
    env=st.dictionaries(
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True),
        st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"), max_size=30),
        max_size=8,
    ),
    inner=st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=5),
)
def test_wrap_keeps_values_off_the_argv_and_inner_command_intact(
    env: dict[str, str], inner: list[str]
) -> None:
    cmd = c.wrap_command(inner, "img.sif", env=env)
    assert "--env" not in cmd[: -len(inner)]  # values travel as APPTAINERENV_*
    assert cmd[-len(inner) :] == inner and cmd[-len(inner) - 1] == "img.sif"
    docker = c.wrap_command(inner, "img:1", env=env)
    head = docker[: docker.index("--entrypoint")]
    assert [head[i + 1] for i, a in enumerate(head) if a == "--env"] == list(env)
    assert docker[docker.index("--entrypoint") + 1] == inner[0]
    assert docker[-len(inner) :][1:] == inner[1:]


def test_forwarded_env_picks_launcher_variables_only() -> None:
    environ = {
        "MASTER_ADDR": "n1",
        "MASTER_PORT": "29500",
        "RANK": "1",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "2",
        "SLURM_JOB_ID": "42",
        "SLURM_PROCID": "1",
        "MLFLOW_TRACKING_URI": "http://10.0.0.1:5000",
        "MLFLOW_TRACKING_PASSWORD": "pw",
        "HF_HOME": "/shared/hf",
        "HF_HUB_OFFLINE": "1",
        "GLAMHPC_RUN_DIR": "/scratch/runs/x",
        "NCCL_SOCKET_IFNAME": "ib0",
        "PATH": "/host/only/bin",
        "LD_LIBRARY_PATH": "/host/cuda/lib",
        "CONDA_PREFIX": "/home/u/conda",
        "PYTHONPATH": "/home/u/src",
        # Not on the allow-list: a site's other MLflow settings and tokens stay on the host.
        "MLFLOW_S3_ENDPOINT_URL": "http://minio",
        "HF_TOKEN": "hf_x",
    }
    picked = c.forwarded_env(environ, extra={"HF_HOME": "/models"})
    host_only = {
        "PATH",
        "LD_LIBRARY_PATH",
        "CONDA_PREFIX",
        "PYTHONPATH",
        "MLFLOW_S3_ENDPOINT_URL",
        "HF_TOKEN",
    }
    assert set(picked) == set(environ) - host_only
    assert picked["HF_HOME"] == "/models"
    assert list(picked) == sorted(picked)


# ----------------------------------------------------------------------------- baking


def test_inspect_and_stage_a_prefetched_model(tmp_path: Path) -> None:
    cache = tmp_path / "hf"
    make_hub_model(cache, "google/flan-t5-small")
    found = c.inspect_cached_model("google/flan-t5-small", cache)
    assert found.complete, found.missing
    context = tmp_path / "ctx"
    (context / c.BAKE_DIR).mkdir(parents=True)
    (context / c.BAKE_DIR / ".gitignore").write_text("*\n")
    staged = c.stage_model("google/flan-t5-small", cache, context)
    assert staged == context / c.BAKE_DIR / "hub" / "models--google--flan-t5-small"
    snapshot = staged / "snapshots" / found.revision
    # Real files, no symlinks into a blobs folder that would not be there in the image.
    assert sorted(p.name for p in snapshot.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    assert not any(p.is_symlink() for p in snapshot.iterdir())
    assert not (staged / "blobs").exists()
    # The staged copy is itself a complete cache for an HF_HOME pointing at the bake folder.
    assert c.inspect_cached_model("google/flan-t5-small", context / c.BAKE_DIR).complete
    c.clear_staged(context)
    assert [p.name for p in (context / c.BAKE_DIR).iterdir()] == [".gitignore"]


def test_incomplete_or_absent_models_are_reported(tmp_path: Path) -> None:
    cache = tmp_path / "hf"
    make_hub_model(cache, "google/flan-t5-base", complete=False)
    found = c.inspect_cached_model("google/flan-t5-base", cache)
    assert not found.complete
    assert found.missing == ("weights (model.safetensors or pytorch_model.bin)",)
    absent = c.inspect_cached_model("google/flan-t5-xl", cache)
    assert not absent.complete and "not prefetched" in absent.missing[0]
    with pytest.raises(c.ContainerError, match="glamhpc models prefetch google/flan-t5-base"):
        c.stage_model("google/flan-t5-base", cache, tmp_path)


def test_sharded_weights_need_every_shard(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "spiece.model").write_text("x")
    (folder / "model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "model-00001-of-00002.safetensors",'
        ' "b": "model-00002-of-00002.safetensors"}}'
    )
    (folder / "model-00001-of-00002.safetensors").write_text("x")
    assert c.missing_model_files(folder) == ["model-00002-of-00002.safetensors"]


def test_hub_cache_dir_layouts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert c.hub_cache_dir() == tmp_path / "home" / "hub"
    assert c.hub_cache_dir(tmp_path / "x") == tmp_path / "x" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "direct"))
    assert c.hub_cache_dir() == tmp_path / "direct"
    # from_pretrained(cache_dir=X) writes models--* straight into X: found too.
    flat = tmp_path / "flat"
    make_hub_model(flat, "org/m")
    (flat / "hub" / "models--org--m").rename(flat / "models--org--m")
    assert c.inspect_cached_model("org/m", flat).complete


# ----------------------------------------------------------------------------- which engine runs


def _bin_with(tmp_path: Path, *names: str) -> str:
    folder = tmp_path / "-".join(names or ("none",))
    folder.mkdir()
    for name in names:
        (folder / name).write_text("#!/bin/sh\n")
        (folder / name).chmod(0o755)
    return str(folder)


def test_run_engine_follows_the_nodes_path_and_the_variable(tmp_path: Path) -> None:
    both, podman_only = _bin_with(tmp_path, "docker", "podman"), _bin_with(tmp_path, "podman")
    assert c.run_engine("glamhpc:1", {"PATH": both}) == "docker"
    assert c.run_engine("glamhpc:1", {"PATH": podman_only}) == "podman"
    # Nothing on PATH: the preferred engine, whose absence the job's start reports.
    assert c.run_engine("glamhpc:1", {"PATH": _bin_with(tmp_path)}) == "docker"
    assert c.run_engine("glamhpc:1", {}) == "docker"
    chosen = {"PATH": both, c.ENGINE_VARIABLE: "podman"}
    assert c.run_candidates("glamhpc:1", chosen) == ("podman",)
    assert c.run_engine("glamhpc:1", chosen) == "podman"
    assert c.run_engine("/img/g.sif", {c.ENGINE_VARIABLE: "singularity"}) == "singularity"
    assert c.run_candidates("/img/g.sif", {}) == ("apptainer", "singularity")
    with pytest.raises(c.ContainerError, match="GLAMHPC_CONTAINER_ENGINE=podman cannot run"):
        c.run_engine("/img/g.sif", {c.ENGINE_VARIABLE: "podman"})
    with pytest.raises(c.ContainerError, match="use one of docker, podman"):
        c.run_candidates("glamhpc:1", {c.ENGINE_VARIABLE: "dockerr"})


def test_job_command_under_podman_maps_the_caller_only_when_rootless(tmp_path: Path) -> None:
    environ = {"PATH": _bin_with(tmp_path, "podman"), "SLURM_JOB_GPUS": "1"}
    user = c.job_command(["python"], "glamhpc:1", environ=environ, gpus=True, uid_gid=(1234, 99))
    assert user.argv[:2] == ["podman", "run"]
    assert user.argv[user.argv.index("--userns") :][:4] == [
        "--userns",
        "keep-id",
        "--user",
        "1234:99",
    ]
    assert user.argv[user.argv.index("--device") + 1] == "nvidia.com/gpu=1"
    # Rootful podman (root) has no user namespace to map and refuses keep-id.
    root = c.job_command(["python"], "glamhpc:1", environ=environ, uid_gid=(0, 0))
    assert "--userns" not in root.argv and root.argv[root.argv.index("--user") + 1] == "0:0"
