from __future__ import annotations

from pathlib import Path

import pytest

from kjupyter.config import load_config
from kjupyter.errors import ConfigError

GPU_PROFILE = """
default = "gpu-a100"
[clusters.gpu-a100]
backend = "kubernetes"
context = "ctx"
namespace = "ml"
image = "registry.example.com/ml/train:2026-11"
store = "s3://ml-scratch/kjupyter"
store_options = { client_kwargs = { endpoint_url = "http://minio.example:9000" } }
service_account = "kjupyter-runner"
secrets = ["aws-creds"]
pending_timeout = "10m"
defaults = { memory = "4Gi", timeout = "1h" }
[clusters.gpu-a100.gpus.A100]
node_selector = { "cloud.google.com/gke-accelerator" = "nvidia-tesla-a100" }
tolerations = [{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }]
"""


def test_no_configuration_gives_the_local_profile() -> None:
    config = load_config()
    assert config.default == "local"
    assert config.profile().backend == "local"


def test_user_file_is_read_and_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user_file = tmp_path / "xdgconfig" / "kjupyter" / "config.toml"
    user_file.parent.mkdir(parents=True)
    user_file.write_text(GPU_PROFILE)
    config = load_config()
    p = config.profile()
    assert (p.name, p.backend, p.namespace, p.context) == ("gpu-a100", "kubernetes", "ml", "ctx")
    assert p.pending_timeout == 600 and p.defaults.resources.memory == "4Gi" and p.defaults.timeout == 3600
    assert p.gpus["A100"].node_selector == {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}
    assert p.gpus["A100"].tolerations[0]["operator"] == "Exists"
    assert p.secrets == ("aws-creds",) and p.source == str(user_file)
    assert config.profiles_offering_gpu("A100") == [p] and "local" in config.profiles


def test_merge_order_and_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "etc" / "config.toml"
    system.parent.mkdir()
    system.write_text(GPU_PROFILE)
    (Path.cwd() / "pyproject.toml").write_text('[tool.kjupyter.clusters.gpu-a100]\nnamespace = "team"\n')
    extra = tmp_path / "extra.toml"
    extra.write_text('[clusters.gpu-a100]\nimage = "img:extra"\n')
    monkeypatch.setenv("KJUPYTER_CONFIG", str(extra))
    monkeypatch.setenv("KJUPYTER_STORE", "gs://other/runs")
    p = load_config().profile()
    assert (p.namespace, p.image, p.store) == ("team", "img:extra", "gs://other/runs")
    assert p.context == "ctx"  # kept from the system file
    monkeypatch.setenv("KJUPYTER_CLUSTER", "local")
    assert load_config().profile().name == "local"


def test_a_hub_notebook_image_is_the_default_image_of_kubernetes_profiles(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(GPU_PROFILE + '[clusters.hub]\nbackend = "kubernetes"\n[clusters.other]\nbackend = "kubernetes"\n')
    env = {"JUPYTER_IMAGE_SPEC": "quay.io/hub/notebook:2026.11", "JUPYTER_IMAGE": "ignored:when-spec-is-set"}
    config = load_config(files=[path], env=env)
    assert config.profile("hub").image == config.profile("other").image == "quay.io/hub/notebook:2026.11"
    assert config.profile("gpu-a100").image == "registry.example.com/ml/train:2026-11"  # a profile's own wins
    assert config.profile("local").image is None
    assert load_config(files=[path], env={"JUPYTER_IMAGE": "hub:1"}).profile("hub").image == "hub:1"
    with_override = {**env, "KJUPYTER_CLUSTER": "hub", "KJUPYTER_IMAGE": "mine:2"}
    assert load_config(files=[path], env=with_override).profile("hub").image == "mine:2"


def test_kjupyter_toml_wins_over_pyproject(tmp_path: Path) -> None:
    (Path.cwd() / "pyproject.toml").write_text('[tool.kjupyter]\ndefault = "a"\n[tool.kjupyter.clusters.a]\n')
    (Path.cwd() / "kjupyter.toml").write_text('default = "b"\n[clusters.b]\nbackend = "local"\n')
    assert load_config().default == "b"


def test_unknown_profile_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown cluster 'gpu'; the known clusters are: local"):
        load_config().profile("gpu")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[clusters.x]\nbakend = "local"\n', "unknown key(s) ['bakend']"),
        ('[clusters.x]\nbackend = "slurm"\n', "is not one of local, kubernetes"),
        ('[clusters.x]\ndefaults = { memory = "16GB" }\n', "not GB/MB"),
        ('[clusters.x]\nnamespace = 3\n', "namespace must be a string"),
        ('default = "nope"\n', "unknown cluster 'nope'"),
        ("this is not toml", "cannot read"),
        ('colour = "blue"\n', "unknown top-level key"),
    ],
)
def test_bad_files_give_one_clear_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, words: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    monkeypatch.setenv("KJUPYTER_CONFIG", str(bad))
    with pytest.raises(ConfigError) as info:
        load_config()
    assert words in str(info.value)


def test_missing_kjupyter_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KJUPYTER_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config()
