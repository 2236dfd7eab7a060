"""The config-parameter reader every backend uses: each kind, each error, and path confinement."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2

from bertserve.backends.parameters import ModelParameters, confined_file, model_file
from bertserve.errors import ConfigError


def _params(**values: str) -> ModelParameters:
    config = model_config_pb2.ModelConfig(name="m")
    for key, value in values.items():
        config.parameters[key].string_value = value
    return ModelParameters(config)


def test_absent_and_blank_keys_give_the_default() -> None:
    params = _params(blank="  ")
    assert params.text("absent", "d") == "d" and params.text("blank", "d") == "d"
    assert params.boolean("blank", True) is True
    assert params.integer("absent", 7) == 7
    assert params.number("absent", 0.5) == 0.5
    assert params.integers("absent", (1, 2)) == (1, 2)
    assert params.names("absent", ("a",)) == ("a",)
    assert params.choice("absent", "x", ("x", "y")) == "x"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("YES", True), (" on ", True), ("1", True)]
    + [("false", False), ("No", False), ("off", False), ("0", False)],
)
def test_booleans_take_the_words_flags_take(text: str, expected: bool) -> None:
    assert _params(flag=text).boolean("flag", not expected) is expected


def test_text_is_stripped_and_required_text_must_be_given() -> None:
    assert _params(name=" qa ").required("name", "name it") == "qa"
    with pytest.raises(ConfigError, match=r"^model 'm': parameters.name is missing: name it$"):
        _params(name=" ").required("name", "name it")


def test_integers_in_and_out_of_bounds() -> None:
    params = _params(n=" 8 ", neg="-3")
    assert params.integer("n", 0, minimum=1, maximum=8) == 8
    assert params.integer("neg", 0) == -3
    with pytest.raises(ConfigError, match=r"parameters.n must be from 1 to 4, got ' 8 '"):
        params.integer("n", 0, minimum=1, maximum=4)
    with pytest.raises(ConfigError, match=r"parameters.neg must be at least 0, got '-3'"):
        params.integer("neg", 0, minimum=0)
    with pytest.raises(ConfigError, match=r"parameters.n must be at most 2, got ' 8 '"):
        params.integer("n", 0, maximum=2)


@pytest.mark.parametrize("text", ["eight", "1.5", "1_000", "0x10", "1e3", "--1"])
def test_integer_spellings_other_than_digits_are_refused(text: str) -> None:
    with pytest.raises(
        ConfigError, match=r"^model 'm': parameters.n must be an integer \(at least 1\), got"
    ):
        _params(n=text).integer("n", 1, minimum=1)
    with pytest.raises(ConfigError, match=r"must be an integer, got"):
        _params(n=text).integer("n", 1)


def test_numbers_are_finite_and_bounded() -> None:
    assert _params(x="-0.25").number("x", 0.0) == -0.25
    assert _params(x="1e-3").number("x", 0.0, minimum=0.0) == 0.001
    for text in ("high", "nan", "inf", "-infinity", "1_0.5"):
        with pytest.raises(ConfigError, match=r"parameters.x must be a number, got"):
            _params(x=text).number("x", 0.0)
    with pytest.raises(ConfigError, match=r"parameters.x must be from 0 to 1, got '1.5'"):
        _params(x="1.5").number("x", 0.0, minimum=0.0, maximum=1.0)
    with pytest.raises(ConfigError, match=r"must be a number \(at least 0.5\), got 'x'"):
        _params(x="x").number("x", 1.0, minimum=0.5)


def test_integer_lists_are_sorted_sets() -> None:
    assert _params(b="16, 1;4,4").integers("b", (), minimum=1) == (1, 4, 16)
    assert _params(b="-2").integers("b", ()) == (-2,)


@pytest.mark.parametrize("text", ["1,x", "0,4", ",,;", "64", "1.5"])
def test_integer_lists_refuse_bad_members(text: str) -> None:
    with pytest.raises(
        ConfigError,
        match=r"^model 'm': parameters.b must list integers \(from 1 to 32\), e.g. '1,4,16', got",
    ):
        _params(b=text).integers("b", (1,), minimum=1, maximum=32)


def test_names_keep_their_order_and_refuse_unknown_or_repeated_ones() -> None:
    assert _params(n="b, a").names("n", ()) == ("b", "a")
    assert _params(n="b,a").names("n", (), allowed=("a", "b", "c")) == ("b", "a")
    for text in ("a,d", "a,a", ",,"):
        with pytest.raises(
            ConfigError, match=r"parameters.n must list distinct names of a, b, c, comma separated"
        ):
            _params(n=text).names("n", (), allowed=("a", "b", "c"))


def test_choices() -> None:
    assert _params(p=" bf16 ").choice("p", "fp32", ("fp32", "bf16")) == "bf16"
    with pytest.raises(ConfigError, match=r"parameters.p must be one of fp32, bf16, got 'int3'"):
        _params(p="int3").choice("p", "fp32", ("fp32", "bf16"))


def test_invalid_builds_the_same_error_for_checks_across_keys() -> None:
    error = _params(b="8").invalid("b", "must not exceed max_batch_size 4")
    assert isinstance(error, ConfigError)
    assert str(error) == "model 'm': parameters.b must not exceed max_batch_size 4, got '8'"


# -- paths ------------------------------------------------------------------------------------


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """<repo>/m/1/ with files in the version folder, the model folder and a subfolder, and a
    secret beside the repository."""
    version = tmp_path / "repo" / "m" / "1"
    (version / "tokenizer").mkdir(parents=True)
    (version / "model.onnx").write_bytes(b"x")
    (version / "tokenizer" / "tokenizer.json").write_text("{}")
    (version.parent / "shared.json").write_text("{}")
    (tmp_path / "secret.txt").write_text("secret")
    return version


def test_paths_resolve_against_the_version_folder(model: Path) -> None:
    assert confined_file("model.onnx", model, "f") == (model / "model.onnx").resolve()
    assert confined_file("../shared.json", model, "f") == (model.parent / "shared.json").resolve()
    assert confined_file(str(model / "model.onnx"), model, "f") == (model / "model.onnx").resolve()
    found = confined_file("tokenizer", model, "f", in_folder="tokenizer.json")
    assert found == (model / "tokenizer" / "tokenizer.json").resolve()


def test_a_missing_file_inside_is_named_as_given(model: Path) -> None:
    with pytest.raises(ConfigError) as info:
        confined_file("nowhere.json", model, "parameters.tokenizer")
    assert str(info.value) == (
        "model 'm': parameters.tokenizer 'nowhere.json' is not a file in the model's folder "
        "(paths are relative to its folder '1')"
    )
    with pytest.raises(ConfigError, match="'tokenizer' is not a file"):
        confined_file("tokenizer", model, "f")  # a folder, without in_folder


def _outside_error(text: str, version: Path) -> str:
    with pytest.raises(ConfigError) as info:
        confined_file(text, version, "parameters.tokenizer", in_folder="tokenizer.json")
    message = str(info.value)
    assert message == (
        f"model 'm': parameters.tokenizer '{text}' leads outside the model's folder: name a "
        "file inside it (paths are relative to its folder '1')"
    )
    return message


def test_paths_outside_the_model_folder_are_refused_alike(model: Path, tmp_path: Path) -> None:
    (model / "link_out").symlink_to(tmp_path / "secret.txt")
    (model / "link_missing").symlink_to(tmp_path / "missing.txt")
    (model / "dir_out").symlink_to(tmp_path)
    cases = [
        "../../../secret.txt",  # exists
        "../../../missing.txt",  # does not
        str(tmp_path / "secret.txt"),
        "/etc/passwd",
        "link_out",
        "link_missing",
        "dir_out",  # a folder outside, even though it holds no tokenizer.json
        "../../m2/1/model.onnx",  # a sibling model
    ]
    messages = {_outside_error(text, model).replace(f"'{text}'", "'<given>'") for text in cases}
    assert len(messages) == 1  # nothing says whether the target exists or what it is


def test_a_file_inside_a_folder_that_links_outside_is_refused(model: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "tokenizer.json").write_text("{}")
    (model / "tok").symlink_to(tmp_path / "elsewhere")
    _outside_error("tok", model)
    _outside_error("tok/tokenizer.json", model)


def test_a_link_that_stays_inside_is_followed(model: Path) -> None:
    (model.parent / "current").symlink_to(model, target_is_directory=True)
    found = confined_file("../current/model.onnx", model, "f")
    assert found == (model / "model.onnx").resolve()


@pytest.mark.parametrize("text", ["bad\x00name", "loop"])
def test_unresolvable_paths_are_refused(model: Path, text: str) -> None:
    os.symlink("loop", model / "loop")  # a link to itself
    _outside_error(text, model)


def test_the_default_model_file_is_taken_as_the_repository_holds_it(
    model: Path, tmp_path: Path
) -> None:
    """A version whose default file links out of the model's folder (weights shared between
    variants, a cache snapshot) loads: the repository's owner placed the link. The same
    link named by a config (which a client's load request may set) is refused."""
    shared = tmp_path / "shared-weights.onnx"
    shared.write_bytes(b"weights")
    (model / "model.onnx").unlink()
    (model / "model.onnx").symlink_to(shared)
    found = model_file("", "model.onnx", model)
    assert found.read_bytes() == b"weights"
    with pytest.raises(ConfigError, match="leads outside the model's folder"):
        model_file("model.onnx", "model.onnx", model)
    assert model_file("tokenizer/tokenizer.json", "model.onnx", model).name == "tokenizer.json"


def test_a_missing_default_model_file_says_how_to_name_another(model: Path) -> None:
    (model / "model.onnx").unlink()
    with pytest.raises(ConfigError) as info:
        model_file("", "model.onnx", model)
    assert str(info.value) == (
        "model 'm': no model file 'model.onnx' in its folder '1' "
        "(name another with default_model_filename)"
    )
