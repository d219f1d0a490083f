"""`extract` as a user runs it: errors are one clear line and exit code 2."""

import pytest
from typer.testing import CliRunner

from medprobe.cache import complete_stores
from medprobe.extract.cli import app
from medprobe.extract.config import load_data_config
from medprobe.extract.options import parse_options

runner = CliRunner()


def invoke(*args: str):
    # catch_exceptions=False: the library raises ToolkitError, which main() turns into exit 2;
    # here we check the raised message directly.
    return runner.invoke(app, list(args), catch_exceptions=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--model", "dinov3", "--dataset", "digits"], "did you mean dinov2"),
        (["run", "--model", "resnet50", "--dataset", "isic"], "unknown dataset 'isic'"),
        (
            ["run", "--model", "resnet50", "--dataset", "digits", "--on-error", "ignore"],
            "on_error='ignore'",  # the library's name; run_app rewrites it into --on-error
        ),
        (
            ["run", "--model", "resnet50", "--dataset", "folder", "--data-dir", "/nonexistent"],
            "data_dir='/nonexistent' does not exist; check the path",  # run_app: --data-dir
        ),
        (
            ["run", "--model", "resnet50", "--dataset", "digits", "--option", "oops"],
            "expected key=value",
        ),
        (
            [
                "run",
                "--model",
                "efficientnet-lite0,resnet50",
                "--dataset",
                "digits",
                "--weights",
                __file__,  # exists, so the model count is what is refused
            ],
            "exactly one --model",
        ),
    ],
)
def test_bad_input_is_one_clear_error(args, message):
    result = invoke(*args)
    assert result.exit_code != 0
    assert message in str(result.exception)


def test_run_over_a_folder_then_skip_on_rerun(tmp_path):
    from tests.extract.conftest import write_folder_dataset

    images = write_folder_dataset(tmp_path / "imgs", n_per_class=3)
    args = [
        "run",
        "--model",
        "timm:resnet10t.c3_in1k",
        "--dataset",
        "folder",
        "--data-dir",
        str(images),
        "--cache-dir",
        str(tmp_path / "c"),
        "--no-pretrained",
        "--workers",
        "0",
    ]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    assert "wrote" in first.output
    second = invoke(*args)
    assert second.exit_code == 0 and "already complete, skipped" in second.output
    (store,) = complete_stores(tmp_path / "c")
    assert store.model_id == "timm:resnet10t.c3_in1k" and store.poolings == ("pooled", "mean")
    assert store.model_name == "timm:resnet10t.c3_in1k (random init)"


def test_without_dataset_every_configured_folder_runs_and_missing_ones_are_named(
    tmp_path, monkeypatch
):
    from tests.extract.conftest import write_folder_dataset

    write_folder_dataset(tmp_path / "mine", n_per_class=2)
    (tmp_path / "datasets.toml").write_text(
        '[folder]\npath = "mine"\n\n[csv]\npath = "absent/list.csv"\n'
    )
    monkeypatch.chdir(tmp_path)
    result = invoke(
        "run",
        "--model",
        "timm:resnet10t.c3_in1k",
        "--no-pretrained",
        "--workers",
        "0",
        "--cache-dir",
        "c",
    )
    assert result.exit_code == 0, result.output
    assert "skipping csv" in result.output and "wrote" in result.output


def test_data_config_rejects_unknown_names(tmp_path):
    config = tmp_path / "datasets.toml"
    config.write_text("[isicc]\npath = 'x'\n")
    with pytest.raises(Exception, match=r"unknown dataset \[isicc\]"):
        load_data_config(config, ["isic2019"])


def test_option_values_are_typed():
    assert parse_options(["seed=7", "frontal_only=true", "uncertain=ones", "frac=0.5"]) == {
        "seed": 7,
        "frontal_only": True,
        "uncertain": "ones",
        "frac": 0.5,
    }
