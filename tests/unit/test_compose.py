"""Docker/compose.yaml, read by Docker Compose itself (``docker compose config``: interpolation
from the example env file, the Compose schema, references between services): the two profiles
hold the services the README describes, every FACE_* variable is a real setting with a valid
value, start order is gated on health, only the API's port is published, every secret comes from
the env file, and the scale layout's processes share what they must share."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from face_service.settings import REPOSITORY_ROOT, Settings
from tests.compose_support import (
    COMPOSE_FILE,
    COMPOSE_GPU_FILE,
    ENV_EXAMPLE,
    PROFILES,
    SECRET_NAMES,
    compose_config,
    env_file_values,
    filled_env_file,
    run_compose,
)

SETTING_VARIABLES = {f"FACE_{name.upper()}" for name in Settings.model_fields}
API_SERVICES = {"all-in-one": "face", "scale": "api"}


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return filled_env_file(tmp_path_factory.mktemp("compose"))


@pytest.fixture(scope="module")
def env(env_file: Path) -> dict[str, str]:
    return env_file_values(env_file)


@pytest.fixture(scope="module")
def configs(env_file: Path) -> dict[str, dict[str, Any]]:
    return {profile: compose_config(env_file, profile) for profile in PROFILES}


def services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return config["services"]


def test_each_profile_runs_the_services_of_its_layout(
    configs: dict[str, dict[str, Any]], env_file: Path, env: dict[str, str]
) -> None:
    assert set(services(configs["all-in-one"])) == {"postgres", "face"}
    assert set(services(configs["scale"])) == {"postgres", "triton", "api", "balancer"}
    # The env file's COMPOSE_PROFILES picks the layout when the shell does not: all-in-one.
    assert env["COMPOSE_PROFILES"] == "all-in-one"
    assert set(services(compose_config(env_file))) == {"postgres", "face"}


def test_every_face_variable_is_a_setting_with_a_valid_value(
    configs: dict[str, dict[str, Any]], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    example = {k: v for k, v in env.items() if k.startswith("FACE_")}
    assert set(example) <= SETTING_VARIABLES
    for profile, config in configs.items():
        for name, service in services(config).items():
            environment = service.get("environment") or {}
            face = {k: v for k, v in environment.items() if k.startswith("FACE_")}
            assert set(face) <= SETTING_VARIABLES, (profile, name, set(face) - SETTING_VARIABLES)
            # Each service's settings parse as the service would parse them at start.
            for variable in SETTING_VARIABLES:
                monkeypatch.delenv(variable, raising=False)
            for variable, value in face.items():
                monkeypatch.setenv(variable, value)
            Settings(_env_file=None)  # type: ignore[call-arg]


def test_volumes_are_named_and_declared_and_keep_the_data(
    configs: dict[str, dict[str, Any]],
) -> None:
    for config in configs.values():
        declared = set(config.get("volumes") or {})
        used = {
            mount["source"]
            for service in services(config).values()
            for mount in service.get("volumes") or []
            if mount["type"] == "volume"
        }
        assert used <= declared
    mounts = {
        name: {m["source"]: m["target"] for m in service.get("volumes") or []}
        for name, service in services(configs["all-in-one"]).items()
    }
    assert mounts == {
        "postgres": {"postgres-data": "/var/lib/postgresql/data"},
        # The image's data folder (FACE_DATA_DIR): what the API keeps on disk.
        "face": {"face-data": "/data"},
    }
    assert services(configs["all-in-one"])["face"]["environment"]["FACE_DATA_DIR"] == "/data"


def test_start_order_is_gated_on_health_and_everything_restarts(
    configs: dict[str, dict[str, Any]],
) -> None:
    for config in configs.values():
        for name, service in services(config).items():
            assert service["restart"] == "unless-stopped", name
            assert service["healthcheck"]["test"][0] == "CMD", name
            for needed, condition in (service.get("depends_on") or {}).items():
                assert condition["condition"] == "service_healthy", (name, needed)
                assert "healthcheck" in services(config)[needed], needed
    assert set(services(configs["all-in-one"])["face"]["depends_on"]) == {"postgres"}
    scale = services(configs["scale"])
    assert set(scale["api"]["depends_on"]) == {"triton", "postgres"}
    assert set(scale["balancer"]["depends_on"]) == {"api"}
    # PostgreSQL over TCP (the image's first-start server is on the unix socket only), Triton
    # ready with its models; the API's route answers 200 once Triton and both models are ready.
    postgres_check = services(configs["all-in-one"])["postgres"]["healthcheck"]["test"]
    assert postgres_check[1:4] == ["pg_isready", "-h", "127.0.0.1"]
    assert scale["triton"]["healthcheck"]["test"][-1] == "http://localhost:8000/v2/health/ready"
    for profile, api in API_SERVICES.items():
        assert services(configs[profile])[api]["healthcheck"]["test"][-1] == (
            "http://localhost:3000/health"
        )


def test_only_the_api_port_is_published(configs: dict[str, dict[str, Any]]) -> None:
    published = {
        (profile, name): [(p["published"], p["target"]) for p in service.get("ports") or []]
        for profile, config in configs.items()
        for name, service in services(config).items()
    }
    assert {key: ports for key, ports in published.items() if ports} == {
        ("all-in-one", "face"): [("3000", 3000)],
        ("scale", "balancer"): [("3000", 3000)],
    }


def test_every_secret_comes_from_the_env_file(
    configs: dict[str, dict[str, Any]], env: dict[str, str]
) -> None:
    text = COMPOSE_FILE.read_text()
    for secret in SECRET_NAMES:
        # Referenced and required (compose stops with the message when it is missing or empty).
        assert f"${{{secret}:?" in text, secret
    api = services(configs["all-in-one"])["face"]["environment"]
    assert api["FACE_ADMIN_KEY"] == env["FACE_ADMIN_KEY"]
    assert api["FACE_AUTH_SECRET"] == env["FACE_AUTH_SECRET"]
    postgres = services(configs["all-in-one"])["postgres"]["environment"]
    assert postgres["POSTGRES_PASSWORD"] == env["POSTGRES_PASSWORD"]
    # The secrets reach only the containers that need them.
    assert not {"FACE_ADMIN_KEY", "FACE_AUTH_SECRET"} & set(postgres)
    triton = services(configs["scale"])["triton"]["environment"]
    assert set(triton) == {"FACE_TRITON_CONTROL_KEY"}


def test_the_example_env_file_as_committed_starts_nothing() -> None:
    # Secure by default: no well-known secret in the example, so a copy that was not filled in
    # stops compose, naming every missing secret and how to make it.
    assert {name: env_file_values(ENV_EXAMPLE)[name] for name in SECRET_NAMES} == dict.fromkeys(
        SECRET_NAMES, ""
    )
    done = run_compose("config", "--quiet", env_file=ENV_EXAMPLE)
    assert done.returncode != 0
    for secret in SECRET_NAMES:
        assert f"required variable {secret} is missing a value" in done.stderr
    assert "openssl rand -hex 32" in done.stderr


def test_a_missing_secret_stops_compose_with_a_message(env_file: Path, tmp_path: Path) -> None:
    lines = env_file.read_text().splitlines()
    without = tmp_path / "compose.env"
    without.write_text("\n".join(line for line in lines if not line.startswith("FACE_ADMIN_KEY")))
    assert run_compose("config", "--quiet", env_file=env_file).returncode == 0
    done = run_compose("config", "--quiet", env_file=without)
    assert done.returncode != 0
    assert "required variable FACE_ADMIN_KEY is missing a value" in done.stderr


def test_a_setting_compose_does_not_know_is_refused(env_file: Path, tmp_path: Path) -> None:
    # The check is Compose's own schema: a misspelt key fails it instead of being ignored.
    misspelt = tmp_path / "compose.yaml"
    misspelt.write_text(COMPOSE_FILE.read_text().replace("shm_size:", "shm_sise:"))
    done = run_compose("config", "--quiet", env_file=env_file, compose_file=misspelt)
    assert done.returncode != 0
    assert "services.face.shm_sise" in done.stderr


def test_the_gallery_url_names_the_postgres_service_and_its_credentials(
    configs: dict[str, dict[str, Any]],
) -> None:
    for profile, api_name in API_SERVICES.items():
        config = services(configs[profile])
        url = urlsplit(config[api_name]["environment"]["FACE_GALLERY_DATABASE_URL"])
        postgres = config["postgres"]["environment"]
        assert (url.scheme, url.hostname, url.port) == ("postgresql", "postgres", 5432)
        assert (url.username, url.password, url.path) == (
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_PASSWORD"],
            "/" + postgres["POSTGRES_DB"],
        )
        assert config["postgres"]["image"] == "pgvector/pgvector:pg17"


def test_the_scale_layout_shares_one_triton_and_one_secret(
    configs: dict[str, dict[str, Any]], env: dict[str, str]
) -> None:
    scale = services(configs["scale"])
    triton, api = scale["triton"], scale["api"]
    assert triton["command"] == ["triton"]  # Docker/start.sh triton: Triton alone
    assert api["environment"]["FACE_TRITON_URL"] == "triton:8000"
    assert (
        api["environment"]["FACE_TRITON_CONTROL_KEY"]
        == triton["environment"]["FACE_TRITON_CONTROL_KEY"]
    )
    assert api["deploy"]["replicas"] == int(env["API_REPLICAS"]) >= 2
    # Every API process, in either layout, stores and checks keys under one secret.
    face = services(configs["all-in-one"])["face"]
    for variable in ("FACE_AUTH_SECRET", "FACE_ADMIN_KEY", "FACE_GALLERY_DATABASE_URL"):
        assert api["environment"][variable] == face["environment"][variable]
    # One image for the API and Triton, built from the repository's Dockerfile.
    for service in (face, triton, api):
        assert service["image"] == env["SERVICE_IMAGE"]
        assert service["build"]["dockerfile"] == "Docker/Dockerfile"
        assert Path(service["build"]["context"]) == REPOSITORY_ROOT


def test_the_balancer_takes_the_api_s_largest_request(configs: dict[str, dict[str, Any]]) -> None:
    content = configs["scale"]["configs"]["balancer"]["content"]
    limit_mib = Settings.model_fields["max_request_bytes"].default // (1024 * 1024)
    assert f"client_max_body_size {limit_mib}m;" in content
    # nginx variables are written $$name in the file (a literal $ for compose's interpolation);
    # `config` prints them escaped again, so that its output is a compose file itself.
    assert "set $$api_upstream http://api:3000;" in content
    assert "proxy_pass $$api_upstream;" in content


def test_the_real_env_file_is_kept_out_of_git_and_the_image() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "Docker/.env"], cwd=REPOSITORY_ROOT, check=False
    )
    assert ignored.returncode == 0, "Docker/.env must be ignored by git"
    assert "Docker/.env" in (REPOSITORY_ROOT / ".dockerignore").read_text().split()


@pytest.mark.parametrize("profile", PROFILES)
def test_the_gpu_variant_gives_the_model_server_one_gpu_and_valid_settings(
    env_file: Path, profile: str
) -> None:
    config = compose_config(env_file, profile, overrides=(COMPOSE_GPU_FILE,))
    model_server = "face" if profile == "all-in-one" else "triton"
    service = services(config)[model_server]
    [device] = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert device["capabilities"] == ["gpu"]
    assert device["count"] == 1
    assert service["environment"]["FACE_DEVICE"] == "gpu"
    # The layered file keeps what the main one sets (secrets, gallery URL) and adds only settings.
    for name in services(config):
        environment = services(config)[name].get("environment") or {}
        face = {k: v for k, v in environment.items() if k.startswith("FACE_")}
        assert set(face) <= SETTING_VARIABLES, name
        Settings(**{k.removeprefix("FACE_").lower(): v for k, v in face.items()})
    api = services(config)[API_SERVICES[profile]]
    assert api["environment"]["FACE_GALLERY_DATABASE_URL"].startswith("postgresql://")
    assert api["environment"]["FACE_MAX_CONCURRENT_REQUESTS"] == "64"
