"""A battery of bad input of every kind, generated rather than listed: numeric options of every command, card.json
fields, config values, config files of arbitrary bytes, model.pt files cut anywhere, and a corpus of malformed and
unusual images. Each must end in one line (``error: ...``, exit status 2) or work correctly, and write nothing.

Property-based (hypothesis): the examples are drawn from the kinds of input, so a case nobody listed is tried too.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from saccader.errors import UserError
from saccader.models import config_overrides, create
from saccader.models.bundle import FORMAT, read_card
from saccader.pipeline import cli, config as cfg
from saccader.pipeline.data.images import MAX_PIXELS, ImageError, open_image
from saccader.pipeline.predict import preprocess

REPO = Path(__file__).resolve().parents[2]
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def one_error_line(argv, capsys) -> str:
    """Run the CLI: exit status 2 and exactly one ``error: ...`` line on stderr, no traceback."""
    capsys.readouterr()
    assert cli.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    lines = [line.split("\r")[-1] for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len([x for x in lines if x.startswith("error: ")]) == 1, err
    return next(x for x in lines if x.startswith("error: "))


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------- numeric options

def _options():
    """(command, option string, action) of every option of every subcommand."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, p in sub.choices.items():
        for action in p._actions:
            if action.option_strings:
                yield command, max(action.option_strings, key=len), action


OPTIONS = list(_options())
RANGED = [(c, o, a) for c, o, a in OPTIONS if hasattr(a.type, "bounds")]


def test_every_numeric_option_is_range_checked():
    """No option is parsed by a bare int() / float(): each has bounds (saccader.pipeline.cli_types)."""
    bare = [f"{c} {o}" for c, o, a in OPTIONS if a.type in (int, float)]
    assert not bare and len(RANGED) >= 10, bare


def test_every_config_option_takes_several_files():
    single = [c for c, o, a in OPTIONS if o == "--config" and not isinstance(a, argparse._AppendAction)]
    assert not single and any(o == "--config" for _, o, _ in OPTIONS), single


def _outside(bounds, whole: bool):
    """Values just past and far past each bound."""
    low, high, low_open, high_open = bounds
    parts = []
    if low is not None:
        parts += [st.just(low)] * low_open
        parts.append(st.integers(-10 ** 9, math.ceil(low) - 1) if whole else
                     st.floats(-1e9, low, exclude_max=True, allow_nan=False))
    if high is not None:
        parts += [st.just(high)] * high_open
        parts.append(st.integers(math.floor(high) + 1, 10 ** 9) if whole else
                     st.floats(high, 1e9, exclude_min=True, allow_nan=False))
    return st.one_of(*parts)


@FAST
@given(data=st.data())
def test_a_numeric_option_out_of_range_or_not_a_number_is_one_line(data, capsys, tmp_path):
    command, option, action = data.draw(st.sampled_from(RANGED))
    value = data.draw(st.one_of(_outside(action.type.bounds, action.type.__name__ == "int"),
                                st.sampled_from(["", "nan", "inf", "-inf", "1e999", "abc", "0x10", "1,5", "2 3"]))
                      if any(b is not None for b in action.type.bounds[:2]) else
                      st.sampled_from(["nan", "abc", "inf"]))
    before = set(os.listdir(tmp_path))
    os.chdir(tmp_path)
    try:
        line = one_error_line([command, f"{option}={value}"], capsys)
    finally:
        os.chdir(REPO)
    assert option in line and "fix:" in line and set(os.listdir(tmp_path)) == before


@FAST
@given(data=st.data())
def test_a_numeric_option_in_range_parses_to_its_value(data):
    command, option, action = data.draw(st.sampled_from(RANGED))
    low, high, low_open, high_open = action.type.bounds
    if action.type.__name__ == "int":
        value = data.draw(st.integers(-10 ** 6 if low is None else low, 10 ** 6 if high is None else high))
    else:
        value = data.draw(st.floats(-1e6 if low is None else low, 1e6 if high is None else high,
                                    exclude_min=low_open, exclude_max=high_open, allow_nan=False))
    assert action.type(repr(value)) == value


@pytest.mark.parametrize("device", ["gpu9", "tpu", "cuda:x", "", "cuda:-1", "cuda:99"] +
                         ([] if torch.cuda.is_available() else ["cuda", "cuda:0"]))
def test_a_device_this_machine_lacks_is_one_line(device, capsys):
    line = one_error_line(["predict", "model", "x.png", f"--device={device}"], capsys)
    assert "--device" in line and "fix:" in line


# ------------------------------------------------------------------------------------------------------- the card

def _card() -> dict:
    config = cfg.load_experiment(REPO / "config" / "smoke.yaml")
    ds = config["dataset"]
    from saccader import __version__

    return {"format": FORMAT, "saccader_version": __version__, "code_version": "test", "run": "bagnet77_lowd",
            "seed": 0, "stage": "classify", "model": "bagnet77_lowd",
            "overrides": config_overrides("bagnet77_lowd", config), "num_classes": 10, "label_offset": 0,
            "class_names": [str(i) for i in range(10)], "dataset": "digits",
            "input": {"image_size": ds["image_size"], "resolution": ds["image_size"],
                      "high_res_size": ds["high_res_size"], "crop_padding_fraction": 0.1,
                      "mean": [0.1, 0.1, 0.1], "std": [0.25, 0.25, 0.25]},
            "glimpses": 2, "channels_last": False, "fingerprint": "0123456789abcdef", "dev_top1": 0.5,
            "dev_top5": 0.9}


CARD = _card()
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-10 ** 12, 10 ** 12) |
                           st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                      max_size=3), max_leaves=6)


def _leaves(value, path=()):
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _leaves(sub, (*path, key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from _leaves(sub, (*path, i))
    yield path


def _set(tree, path, value):
    tree = copy.deepcopy(tree)
    if not path:
        return value
    node = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return tree


def _drop(tree, path):
    tree = copy.deepcopy(tree)
    node = tree
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return tree


@FAST
@given(data=st.data())
def test_a_card_with_any_field_changed_reads_to_a_usable_card_or_one_line(data, tmp_path_factory):
    """Whatever a field holds, read_card refuses it in one line or returns a card the eval transform can use:
    finite inputs to the model (a std of 0 or a NaN would give NaN probabilities with exit status 0)."""
    path = data.draw(st.sampled_from([p for p in _leaves(CARD) if p]))
    card = data.draw(st.one_of(JSON_VALUES.map(lambda v: _set(CARD, path, v)),
                               st.just(_drop(CARD, path)) if not isinstance(path[-1], int) else st.nothing()))
    folder = tmp_path_factory.mktemp("card")
    (folder / "card.json").write_text(json.dumps(card))
    try:
        got = read_card(folder)
    except UserError as exc:
        assert "\n" not in str(exc) and "card.json" in str(exc)
        return
    low, high = preprocess(got, Image.new("RGB", (40, 30), (120, 60, 200)))
    assert torch.isfinite(low).all() and low.shape[-1] == got["input"]["image_size"]
    assert got["label_offset"] + len(got["class_names"]) <= got["num_classes"]


@pytest.mark.parametrize("text", ["", "[]", "null", '{"a": NaN}', "\x00\xff binary", '{"format": ' + "[" * 5000])
def test_a_card_that_is_not_a_json_object_is_one_line(text, tmp_path):
    (tmp_path / "card.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(UserError, match="card.json") as info:
        read_card(tmp_path)
    assert "\n" not in str(info.value)


def test_a_card_with_std_zero_is_refused(tmp_path):
    (tmp_path / "card.json").write_text(json.dumps(_set(CARD, ("input", "std", 1), 0)))
    with pytest.raises(UserError, match=r"input\.std\.1 = 0 is out of range; fix: set it > 0"):
        read_card(tmp_path)


# --------------------------------------------------------------------------------------------------- model.pt

@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A loadable bundle (untrained weights: what it predicts does not matter here)."""
    folder = tmp_path_factory.mktemp("bundle")
    torch.manual_seed(0)
    torch.save(create(CARD["model"], CARD["num_classes"], **CARD["overrides"]).state_dict(), folder / "model.pt")
    (folder / "card.json").write_text(json.dumps(CARD))
    return folder


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@FAST
@given(cut=st.floats(0, 0.999),
       kind=st.sampled_from(["cut", "zero", "noise", "text", "pickle", "evil_zip", "pickle5", "list"]))
def test_a_damaged_model_pt_is_diagnosed_in_one_line(bundle, cut, kind, tmp_path_factory, capsys):
    folder = tmp_path_factory.mktemp("damaged")
    (folder / "card.json").write_bytes((bundle / "card.json").read_bytes())
    good = (bundle / "model.pt").read_bytes()
    damaged = {"cut": good[:int(len(good) * cut)], "zero": b"", "noise": np.random.default_rng(0).bytes(200),
               "text": b"version https://git-lfs.github.com/spec/v1\n", "pickle": pickle.dumps(_Evil(), protocol=2),
               "pickle5": pickle.dumps(_Evil(), protocol=5), "list": None, "evil_zip": None}[kind]
    if kind in ("list", "evil_zip"):  # torch's own format holding a list, or an object that runs a command
        torch.save([1, 2, 3] if kind == "list" else {"weight": _Evil()}, folder / "model.pt")
    else:
        (folder / "model.pt").write_bytes(damaged)
    out = folder / "out"
    line = one_error_line(["predict", folder, "photo.png", "--out", out, "--device", "cpu"], capsys)
    want = {"zero": "is empty (0 bytes)", "pickle": "holds more than weights", "evil_zip": "holds more than weights",
            "list": "not a state dict"}
    if kind == "cut" and len(damaged) == 0:
        kind = "zero"
    assert want.get(kind, "is truncated or not a PyTorch file") in line, line
    assert "does not fit" not in line and not out.exists()


# ------------------------------------------------------------------------------------------------ config values

BASE = cfg.load_experiment(REPO / "config" / "smoke.yaml")
def _walk(tree, path):
    for key in path:
        tree = tree[key]
    return tree


CONFIG_LEAVES = [p for p in _leaves(BASE) if p and not isinstance(_walk(BASE, p), (dict, list))]


@FAST
@given(data=st.data())
def test_a_config_with_any_value_changed_validates_or_is_one_line(data):
    path = data.draw(st.sampled_from(CONFIG_LEAVES))
    old = _walk(BASE, path)
    nearby = (st.integers(-3, 3).map(lambda d: old + d) | st.integers(-10 ** 9, 10 ** 9)
              if isinstance(old, int) and not isinstance(old, bool) else
              st.floats(-1e3, 1e3) if isinstance(old, float) else st.nothing())
    value = data.draw(nearby | JSON_VALUES)
    config = _set(BASE, path, value)
    try:
        cfg.validate(config, "test.yaml")
    except UserError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("test.yaml: ")
        return
    # models.* are constructor overrides, typed by the constructor when the model is built, not by the schema
    whole = isinstance(old, int) and not isinstance(old, bool) and path[0] != "models"
    if whole and (not isinstance(value, int) or isinstance(value, bool)):
        raise AssertionError(f"{'.'.join(map(str, path))} = {value!r} accepted where a whole number belongs")


@FAST
@given(content=st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_a_config_file_of_any_bytes_is_read_or_one_line(content, tmp_path_factory, capsys):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_bytes(content)
    try:
        cfg.load([REPO / "config.yaml", path])
    except UserError as exc:
        assert "\n" not in str(exc)


def test_a_binary_config_file_through_the_cli(tmp_path, capsys):
    (tmp_path / "c.yaml").write_bytes(bytes(range(256)))
    line = one_error_line(["make-dataset", "--config", tmp_path / "c.yaml"], capsys)
    assert "is not a text file" in line and set(os.listdir(tmp_path)) == {"c.yaml"}


def test_make_dataset_and_check_data_take_an_overlay(tmp_path, capsys):
    """Both merge several --config files (each names the other command's fix otherwise)."""
    (tmp_path / "o.yaml").write_text(yaml.safe_dump({"dataset": {"name": "imagenet", "root": str(tmp_path / "no")}}))
    line = one_error_line(["make-dataset", "--config", REPO / "config.yaml", "--config", tmp_path / "o.yaml"], capsys)
    assert "make-dataset builds the embedded digits dataset" in line
    line = one_error_line(["check-data", "--config", REPO / "config.yaml", "--config", tmp_path / "o.yaml"], capsys)
    assert str(tmp_path / "no") in line


# ----------------------------------------------------------------------------------------- a corpus of images

def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (valid CRC) with one empty data chunk."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def _encoded(img: Image.Image, fmt: str) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


GRAY16 = Image.fromarray(np.full((12, 16), 32768, dtype=np.uint16))  # mid-gray in 16 bits
RGB = Image.new("RGB", (16, 12), (200, 40, 90))
# (file name, bytes, the mean gray level it must decode to, or None where it must be refused)
READABLE = {
    "gray16.png": (_encoded(GRAY16, "PNG"), 128),
    "gray16_low.png": (_encoded(Image.fromarray(np.full((12, 16), 200, dtype=np.uint16)), "PNG"), 1),
    "gray8.png": (_encoded(Image.new("L", (16, 12), 77), "PNG"), 77),
    "palette.png": (_encoded(RGB.convert("P"), "PNG"), None),
    "cmyk.jpg": (_encoded(Image.new("CMYK", (16, 12), (0, 0, 0, 0)), "JPEG"), 255),
    "la.png": (_encoded(Image.new("LA", (16, 12), (0, 0)), "PNG"), 255),  # transparent: white, as a viewer shows
    "rgba.png": (_encoded(Image.new("RGBA", (16, 12), (10, 10, 10, 255)), "PNG"), 10),
    "bilevel.png": (_encoded(Image.new("1", (16, 12), 1), "PNG"), 255),
    "png_named.jpg": (_encoded(Image.new("L", (16, 12), 50), "PNG"), 50),
}
BROKEN = {
    "zero.png": b"",
    "text.png": b"not an image at all\n",
    "huge_header.png": _png_header(100_000, 100_000),
    "over_budget.png": _png_header(int(MAX_PIXELS ** 0.5) + 1, int(MAX_PIXELS ** 0.5) + 1),
    "no_pixels.png": _png_header(0, 10),
    "html.jpg": b"<html><body>404</body></html>",
}


@pytest.mark.parametrize("name", sorted(READABLE))
def test_unusual_images_decode_to_the_right_8_bit_rgb(name, tmp_path):
    content, gray = READABLE[name]
    (tmp_path / name).write_bytes(content)
    img = open_image(tmp_path / name)
    assert img.mode == "RGB" and img.size == (16, 12)
    if gray is not None:
        assert abs(np.asarray(img).mean() - gray) <= 1.5, (name, np.asarray(img).mean())


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_images_are_one_line_naming_the_file(name, tmp_path):
    (tmp_path / name).write_bytes(BROKEN[name])
    with pytest.raises(ImageError) as info:
        open_image(tmp_path / name)
    assert name in str(info.value) and "\n" not in str(info.value) and "fix:" in str(info.value)


@FAST
@given(cut=st.floats(0.05, 0.95), fmt=st.sampled_from(["PNG", "JPEG"]))
def test_a_truncated_image_decodes_or_is_one_line(cut, fmt, tmp_path_factory):
    """Anywhere an image is cut, it decodes to its full size or is refused naming the file; never a traceback."""
    rng = np.random.default_rng(0)
    content = _encoded(Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)), fmt)
    path = tmp_path_factory.mktemp("cut") / f"x.{fmt.lower()}"
    path.write_bytes(content[:int(len(content) * cut)])
    try:
        assert open_image(path).size == (64, 48)
    except ImageError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)


def test_predict_over_the_corpus_skips_each_broken_image_in_one_line(bundle, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for name, content in {**{k: v for k, (v, _) in READABLE.items()}, **BROKEN}.items():
        (images / name).write_bytes(content)
    before = snapshot(images)
    capsys.readouterr()
    assert cli.main(["predict", str(bundle), str(images), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    skipped = [line for line in err.splitlines() if "skipped" in line]
    assert len(skipped) == len(BROKEN) and all(any(n in line for line in skipped) for n in BROKEN), err
    assert len(list((tmp_path / "out").glob("*.json"))) == len(READABLE)
    record = json.loads((tmp_path / "out" / "gray16.json").read_text())
    assert record["image_size"] == [16, 12] and snapshot(images) == before


def test_check_data_lists_images_over_the_pixel_budget_without_decoding_them(tiny_dataset, tmp_path, capsys):
    import shutil

    from saccader.pipeline.data import check_data

    root = tmp_path / "copy"
    shutil.copytree(tiny_dataset["dataset"]["root"], root)
    victims = sorted((root / "train" / "2").glob("*.png"))[:2]
    victims[0].write_bytes(BROKEN["huge_header.png"])
    victims[1].write_bytes(BROKEN["over_budget.png"])
    with pytest.raises(UserError, match="2 unreadable"):
        check_data(tiny_dataset, str(root))
    err = capsys.readouterr().err
    assert all(f"{p}: image {p} is" in err and "over the budget" in err for p in victims), err


def test_init_config_on_truncated_images_is_one_line(tmp_path, capsys):
    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(4):
            content = _encoded(Image.new("RGB", (40, 40), (i * 40, 0, 0)), "PNG")
            (tmp_path / "data" / c / f"{i}.png").write_bytes(content[:len(content) // 2] if c == "b" else content)
    before = snapshot(tmp_path)
    line = one_error_line(["init-config", tmp_path / "data", "--out", tmp_path / "c.yaml"], capsys)
    assert "cannot read image" in line and "/b/" in line and snapshot(tmp_path) == before


def test_init_config_out_on_a_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "target").mkdir()
    before = snapshot(tmp_path)
    line = one_error_line(["init-config", tmp_path / "data", "--out", tmp_path / "target", "--force"], capsys)
    assert "is a folder" in line and snapshot(tmp_path) == before and not any((tmp_path / "target").iterdir())


# ------------------------------------------------------------------------------------------ the last resort

def test_an_unexpected_exception_is_one_line_naming_the_command(monkeypatch, tmp_path, capsys):
    from saccader.pipeline import params

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(params, "_run", broken)
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    capsys.readouterr()
    assert cli.main(["params", "--config", "config.yaml"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("error: `saccader params --config config.yaml` stopped on an unexpected "
                          "ZeroDivisionError: division by zero") and "--debug" in err and cli.DEBUG_ENV in err
    with pytest.raises(ZeroDivisionError):  # --debug anywhere on the line: the real exception
        cli.main(["params", "--config", "config.yaml", "--debug"])
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(ZeroDivisionError):
        cli.main(["params", "--config", "config.yaml"])
