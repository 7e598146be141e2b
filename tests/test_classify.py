"""`pointcalip classify` and the `ZeroShotClassifier` API, with a tiny local CLIP."""

from __future__ import annotations

import base64
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch

from pointcalip.aggregation import logits_from_components
from pointcalip.api import Prediction, ZeroShotClassifier
from pointcalip.cli.classify_report import small_views
from pointcalip.clouds import prepare_cloud, prepare_cloud_info, read_point_cloud
from pointcalip.htmlreport import views_png
from PIL import Image
from pointcalip.cli import main
from pointcalip.datasets import class_names
from pointcalip.encoders import CLIPEncoder
from pointcalip.errors import ConfigError, PointCloudError
from pointcalip.projection import get_preset, project_depth

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"
SAMPLE_FILES = sorted(p for p in SAMPLES.iterdir() if p.suffix != ".md")
VOCAB = ["chair", "table", "airplane", "lamp", "mug"]


def _classify(model, *args: str) -> int:
    return main(["classify", "--backbone", str(model[0]), "--pretrained", str(model[1]), "--device", "cpu", *args])


def _json_rows(model, capsys, *args: str):
    rc = _classify(model, "--json", *args)
    captured = capsys.readouterr()
    return rc, json.loads(captured.out), captured.err


@pytest.fixture(scope="module")
def clf(resnet_encoder) -> ZeroShotClassifier:
    return ZeroShotClassifier(classes=VOCAB, encoder=resnet_encoder)


@pytest.fixture(scope="module")
def big_cloud() -> np.ndarray:
    """A raw (not normalised) 2,000-point cloud: a squashed, shifted noisy sphere with a spike."""
    rng = np.random.default_rng(3)
    p = rng.normal(size=(2000, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    p[:200, 1] *= 3.0
    return (p * [2.0, 0.5, 1.0] + [5.0, -1.0, 2.0]).astype(np.float32)


@pytest.fixture()
def bad_files(tmp_path: Path) -> List[str]:
    corrupt = tmp_path / "corrupt.ply"
    corrupt.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 500\n"
                        b"property float x\nproperty float y\nproperty float z\nend_header\n" + b"\0" * 40)
    unknown = tmp_path / "cloud.foo"
    unknown.write_text("1 2 3\n4 5 6\n")
    return [str(corrupt), str(tmp_path / "missing.ply"), str(unknown)]


# ----------------------------------------------------------------------------- CLI


def test_json_schema_probs_sum_to_one(tiny_resnet, capsys) -> None:
    files = [str(SAMPLES / n) for n in ("chair.ply", "table.pcd", "airplane.xyz", "mug.obj")]
    rc, rows, err = _json_rows(tiny_resnet, capsys, *files, "--classes", ",".join(VOCAB), "--topk", "99")
    assert rc == 0 and err == ""
    assert [r["path"] for r in rows] == files
    for r in rows:
        assert set(r) == {"path", "topk", "n_points", "error"}
        assert r["error"] is None
        assert len(r["topk"]) == len(VOCAB)  # capped at K
        assert {t["label"] for t in r["topk"]} == set(VOCAB)
        probs = [t["prob"] for t in r["topk"]]
        assert probs == sorted(probs, reverse=True)
        assert sum(probs) == pytest.approx(1.0, abs=1e-9)
    assert [r["n_points"] for r in rows[:3]] == [1024, 1024, 1024]
    assert rows[3]["n_points"] >= 1024  # mesh: surface samples


def test_topk_matches_api(tiny_resnet, resnet_encoder, capsys) -> None:
    files = [str(p) for p in SAMPLE_FILES]
    rc, rows, _ = _json_rows(tiny_resnet, capsys, *files, "--classes", ",".join(VOCAB), "--topk", "3",
                             "--batch-size", "2")
    assert rc == 0
    pred = ZeroShotClassifier(classes=VOCAB, encoder=resnet_encoder).predict(files)
    for r, probs, label in zip(rows, pred.probs, pred.labels):
        assert len(r["topk"]) == 3
        assert r["topk"][0]["label"] == label
        for t in r["topk"]:
            assert t["prob"] == pytest.approx(probs[VOCAB.index(t["label"])], abs=1e-6)


def test_bad_files_get_error_rows_and_exit_2(tiny_resnet, bad_files, capsys) -> None:
    good = [str(SAMPLES / "chair.ply"), str(SAMPLES / "lamp.npy")]
    inputs = [good[0], *bad_files, good[1]]
    rc, rows, err = _json_rows(tiny_resnet, capsys, *inputs, "--classes", "chair,lamp")
    assert rc == 2
    assert [r["path"] for r in rows] == inputs
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "3 of 5" in err
    for r in rows[1:4]:
        assert r["topk"] == [] and r["n_points"] is None
        assert isinstance(r["error"], str) and "\n" not in r["error"] and r["path"] in r["error"]
    assert "missing.ply" in rows[2]["error"] and ".foo" in rows[3]["error"]
    for r in (rows[0], rows[4]):
        assert r["error"] is None and len(r["topk"]) == 2


def test_table_output_and_errors(tiny_resnet, bad_files, capsys) -> None:
    rc = _classify(tiny_resnet, str(SAMPLES / "chair.ply"), bad_files[1], "--classes", "chair,table", "--topk", "1")
    out, err = capsys.readouterr()
    assert rc == 2 and "Traceback" not in err
    lines = out.splitlines()
    assert lines[0].startswith(str(SAMPLES / "chair.ply")) and "1024 points" in lines[0]
    assert lines[1].strip().startswith("1. ") and "%" in lines[1]
    assert lines[2].startswith("error: ") and "missing.ply" in lines[2]


def test_open_vocabulary_classes(tiny_resnet, capsys) -> None:
    rc, rows, _ = _json_rows(tiny_resnet, capsys, str(SAMPLES / "chair.ply"),
                             "--classes", " red sports car, coffee mug,,banana ", "--topk", "10")
    assert rc == 0
    assert {t["label"] for t in rows[0]["topk"]} == {"red sports car", "coffee mug", "banana"}


def test_classes_file(tiny_resnet, tmp_path, capsys) -> None:
    f = tmp_path / "classes.txt"
    f.write_text("\nwooden chair\n\n  garden table  \n# a comment\nstreet lamp\n\n")
    rc, rows, _ = _json_rows(tiny_resnet, capsys, str(SAMPLES / "lamp.npy"), "--classes-file", str(f))
    assert rc == 0
    assert {t["label"] for t in rows[0]["topk"]} == {"wooden chair", "garden table", "street lamp"}
    assert _classify(tiny_resnet, str(SAMPLES / "lamp.npy"), "--classes-file", str(tmp_path / "nope.txt")) == 2
    assert "nope.txt" in capsys.readouterr().err


@pytest.mark.parametrize("dataset, k", [("modelnet10", 10), ("scanobjectnn", 15)])
def test_dataset_classes(tiny_resnet, capsys, dataset, k) -> None:
    rc, rows, _ = _json_rows(tiny_resnet, capsys, str(SAMPLES / "chair.ply"), "--dataset-classes", dataset,
                             "--topk", "50")
    assert rc == 0
    assert sorted(t["label"] for t in rows[0]["topk"]) == sorted(class_names(dataset))
    assert len(rows[0]["topk"]) == k


def test_default_vocabulary_is_modelnet40_top5(tiny_resnet, capsys) -> None:
    rc, rows, _ = _json_rows(tiny_resnet, capsys, str(SAMPLES / "table.pcd"), "--method", "pointclip")
    assert rc == 0 and len(rows[0]["topk"]) == 5
    assert {t["label"] for t in rows[0]["topk"]} <= set(class_names("modelnet40"))


def test_vocabulary_options_are_exclusive(tiny_resnet, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        _classify(tiny_resnet, "x.ply", "--classes", "a,b", "--dataset-classes", "modelnet10")
    assert exc.value.code == 2


def test_bad_options_are_one_line_errors(tiny_resnet, capsys) -> None:
    chair = str(SAMPLES / "chair.ply")
    for args in (["--topk", "0"], ["--classes", " , "], ["--classes", "a,b,a"], ["--view-weights", "1,1"]):
        assert _classify(tiny_resnet, chair, *args) == 2
        err = capsys.readouterr().err
        assert err.startswith("pointcalip classify: error:") and len(err.strip().splitlines()) == 1


def test_folders_and_globs(tiny_resnet, tmp_path, capsys) -> None:
    folder = tmp_path / "clouds"
    (folder / "sub").mkdir(parents=True)
    for p in SAMPLE_FILES:
        shutil.copy(p, folder / p.name)
    shutil.copy(SAMPLES / "README.md", folder / "README.md")
    shutil.copy(SAMPLES / "chair.ply", folder / "sub" / "deep.ply")
    (tmp_path / "empty").mkdir()
    names = sorted(p.name for p in SAMPLE_FILES)
    args = [str(folder), str(folder / "*.ply"), str(tmp_path / "nothing*.pcd"), str(tmp_path / "empty"),
            "--classes", "chair,table", "--topk", "1"]
    rc, rows, _ = _json_rows(tiny_resnet, capsys, *args)
    assert rc == 2
    paths = [Path(r["path"]) for r in rows]
    assert [p.name for p in paths[:5]] == names  # folder: supported files only, sorted, not recursive
    assert paths[5] == folder / "chair.ply"  # the glob, expanded by us
    assert rows[6]["error"] and "nothing*.pcd" in rows[6]["error"]
    assert rows[7]["error"] and "empty" in rows[7]["error"]
    assert len(rows) == 8 and all(r["error"] is None for r in rows[:6])
    rc, rows, _ = _json_rows(tiny_resnet, capsys, str(folder), "--recursive", "--classes", "chair,table")
    assert rc == 0 and len(rows) == 6 and any(r["path"].endswith("deep.ply") for r in rows)


def test_text_features_encoded_once_per_run(tiny_resnet, monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setenv("POINTCALIP_CACHE", str(tmp_path / "cache"))  # an empty text cache
    calls = []
    original = CLIPEncoder.encode_sentences

    def counting(self, sentences, *args, **kwargs):
        calls.append([tuple(s) for s in sentences])
        return original(self, sentences, *args, **kwargs)

    monkeypatch.setattr(CLIPEncoder, "encode_sentences", counting)
    files = [str(p) for p in SAMPLE_FILES]
    assert _classify(tiny_resnet, *files, "--classes", "chair,table", "--batch-size", "2", "--json") == 0
    assert len(json.loads(capsys.readouterr().out)) == len(files)
    # once, with the zero-shot template
    assert calls == [[("point cloud depth map of a chair.",), ("point cloud depth map of a table.",)]]
    # a second run reads the text features from the cache: no encoding at all
    assert _classify(tiny_resnet, *files[:1], "--classes", "chair,table", "--json") == 0
    assert len(calls) == 1


def test_config_file_and_templates(tiny_resnet, tmp_path, capsys) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: modelnet10\nmethod: pointclip\ntemplates: ['a depth map of a {}.']\n")
    rc, rows, _ = _json_rows(tiny_resnet, capsys, str(SAMPLES / "chair.ply"), "--config", str(cfg), "--topk", "20")
    assert rc == 0 and len(rows[0]["topk"]) == 10  # the config's dataset gives the vocabulary


# ----------------------------------------------------------------------------- API


def test_api_input_kinds_agree(clf, big_cloud) -> None:
    path = SAMPLES / "lamp.npy"
    raw = np.load(path)  # (1024, 3) as stored, not normalised
    ref = clf.predict(str(path))
    assert isinstance(ref, Prediction) and ref.probs.shape == (1, len(VOCAB))
    assert ref.indices.shape == (1,) and ref.labels == [VOCAB[int(ref.indices[0])]]
    other = (raw[::-1] * 3.0 + 7.0).astype(np.float32)  # scaled, shifted, reversed
    cases = {
        "Path": clf.predict(path),
        "list": clf.predict([str(path), path]),
        "numpy N3": clf.predict(raw),
        "numpy BN3": clf.predict(np.stack([raw, other])),
        "tensor BN3": clf.predict(torch.from_numpy(np.stack([raw, raw]))),
        "list of arrays": clf.predict([raw, other]),
    }
    for name, pred in cases.items():
        for row in pred.probs:
            np.testing.assert_allclose(row, ref.probs[0], atol=1e-6, err_msg=name)
        assert pred.labels == ref.labels * len(pred.labels), name
    # The tiny random model separates clouds by far more than that tolerance.
    assert np.abs(clf.predict(big_cloud).probs - ref.probs).max() > 1e-4


def test_api_probabilities(clf, big_cloud) -> None:
    pred = clf.predict([big_cloud, np.load(SAMPLES / "lamp.npy")])
    np.testing.assert_allclose(pred.probs.sum(axis=1), 1.0, atol=1e-9)
    assert (pred.indices == pred.probs.argmax(axis=1)).all()
    top = pred.topk(2)
    assert [len(t) for t in top] == [2, 2] and top[0][0] == (pred.labels[0], pytest.approx(pred.probs[0].max()))


def test_api_logits_are_spec_logits(resnet_encoder, clf) -> None:
    clouds = clf.prepare(str(SAMPLES / "chair.ply"))
    comps = clf.engine.components(torch.from_numpy(np.stack(clouds)), clf.text)
    want = logits_from_components(comps, (1.0,) * 6, 1.12, 0.02).double().softmax(-1).numpy()
    np.testing.assert_allclose(clf.predict_clouds(clouds).probs, want, atol=1e-6)
    weights = (1.0, 0.5, 0.25, 1.0, 0.75, 0.5)
    pc = ZeroShotClassifier(classes=VOCAB, encoder=resnet_encoder, method="pointclip", view_weights=weights)
    want = logits_from_components(comps, weights, 0.0, 0.0).double().softmax(-1).numpy()
    np.testing.assert_allclose(pc.predict_clouds(clouds).probs, want, atol=1e-6)


def test_api_point_order_does_not_matter(resnet_encoder, big_cloud) -> None:
    clf = ZeroShotClassifier(classes=VOCAB, encoder=resnet_encoder, num_points=512)
    perm = np.random.default_rng(0).permutation(len(big_cloud))
    a, b = clf.prepare(big_cloud)[0], clf.prepare(big_cloud[perm])[0]
    assert a.shape == (512, 3)
    np.testing.assert_array_equal(a, b)  # same FPS subset whatever the input order
    small = np.load(SAMPLES / "lamp.npy")
    np.testing.assert_allclose(clf.predict(small[::-1]).probs, clf.predict(small).probs, atol=1e-6)
    np.testing.assert_allclose(clf.predict(big_cloud[perm]).probs, clf.predict(big_cloud).probs, atol=1e-6)


def test_api_mixed_sizes_in_one_call(resnet_encoder, big_cloud) -> None:
    clf = ZeroShotClassifier(classes=VOCAB, encoder=resnet_encoder, num_points=1500, batch_size=2)
    lamp = np.load(SAMPLES / "lamp.npy")
    items = [big_cloud, lamp, big_cloud[:300], str(SAMPLES / "chair.ply")]
    pred = clf.predict(items)
    assert pred.probs.shape == (4, len(VOCAB))
    for i, item in enumerate(items):
        np.testing.assert_allclose(pred.probs[i], clf.predict([item]).probs[0], atol=1e-6)


def test_api_renders_depth(clf) -> None:
    lamp = np.load(SAMPLES / "lamp.npy")
    depth = clf.render([lamp, lamp[:500]])
    assert depth.shape == (2, 6, 128, 128) and depth.dtype == np.float32
    want = project_depth(torch.from_numpy(prepare_cloud(lamp, 1024)[None]), get_preset("pointclip")).numpy()[0]
    np.testing.assert_allclose(depth[0], want, atol=1e-6)


def test_api_default_vocabulary_and_weights_paths(tiny_resnet) -> None:
    clf = ZeroShotClassifier(backbone=str(tiny_resnet[0]), pretrained=str(tiny_resnet[1]), device="cpu")
    assert list(clf.classes) == class_names("modelnet40") and clf.text.shape[0] == 40
    assert clf.predict(str(SAMPLES / "mug.obj")).probs.shape == (1, 40)


def test_api_errors(clf, resnet_encoder) -> None:
    bad = {
        "NaN": np.array([[0, 0, 0], [1, np.nan, 0]], dtype=np.float32),
        "shape": np.zeros((10, 2), dtype=np.float32),
        "degenerate": np.ones((10, 3), dtype=np.float32),
    }
    for name, arr in bad.items():
        with pytest.raises(PointCloudError):
            clf.predict(arr)
    with pytest.raises(PointCloudError, match="nope.ply"):
        clf.predict("nope.ply")
    with pytest.raises(PointCloudError):
        clf.predict(42)
    for classes in ([], ["a", "a"], "chair,table", ["ok", " "]):
        with pytest.raises(ConfigError):
            ZeroShotClassifier(classes=classes, encoder=resnet_encoder)
    with pytest.raises(ConfigError):
        ZeroShotClassifier(classes=VOCAB, encoder=resnet_encoder, view_weights=(1.0, 1.0))
    assert clf.predict([]).probs.shape == (0, len(VOCAB))


def test_read_point_cloud_counts_points_before_resampling() -> None:
    points, n = read_point_cloud(SAMPLES / "airplane.xyz", num_points=100)
    assert n == 1024 and points.shape == (100, 3)


# ----------------------------------------------------------------------------- report


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: List = []
        self.text: List[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text.append(data)


def test_report_shows_views_topk_axis_and_errors(tiny_resnet, bad_files, tmp_path, capsys) -> None:
    report = tmp_path / "r.html"
    good = [str(SAMPLES / "chair.ply"), str(SAMPLES / "lamp.npy")]
    rc = _classify(tiny_resnet, good[0], *bad_files, good[1], "--classes", ",".join(VOCAB), "--topk", "3",
                   "--up-axis", "z", "--report", str(report), "--json")
    rows = json.loads(capsys.readouterr().out)
    assert rc == 2 and report.is_file()
    page = _Html()
    page.feed(report.read_text(encoding="utf-8"))
    text = " ".join(page.text)
    images = [a for t, a in page.tags if t == "img"]
    assert len(images) == len(good)  # one contact sheet per classified input
    for a in images:
        assert a["src"].startswith("data:image/png;base64,")
        png = base64.b64decode(a["src"].split(",", 1)[1])
        with Image.open(io.BytesIO(png)) as im:
            assert im.format == "PNG" and im.width >= 3 * 64  # 6 views side by side
    for t, a in page.tags:  # nothing is fetched from anywhere
        for key in ("src", "href"):
            if a.get(key):
                assert a[key].startswith(("data:", "#")), (t, a)
        assert t not in ("link", "iframe")
    for r in rows:
        if r["error"] is not None:
            assert r["error"] in text  # the failure's one-line message
        else:
            for t in r["topk"]:
                assert t["label"] in text and f"{t['prob']:.3f}" in text
    assert report.read_text(encoding="utf-8").count('class="badge up">up axis z<') == len(good)
    # the lamp's card shows the encoder's pictures (projection.preview) of the cloud rotated z -> y
    def sheet(up_axis: str) -> np.ndarray:
        points = prepare_cloud_info(np.load(SAMPLES / "lamp.npy"), 1024, up_axis=up_axis).points
        views = get_preset("pointclip").preview(torch.from_numpy(points[None]))[0].numpy()
        with Image.open(io.BytesIO(views_png(small_views(views))[0])) as im:
            return np.asarray(im.convert("L"))

    with Image.open(io.BytesIO(base64.b64decode(images[1]["src"].split(",", 1)[1]))) as im:
        shown = np.asarray(im.convert("L"))
    np.testing.assert_array_equal(shown, sheet("z"))
    assert not np.array_equal(shown, sheet("y"))


# ----------------------------------------------------------------------------- API settings


def test_api_passes_projection_runtime_precision_prompts(resnet_encoder, tmp_path) -> None:
    clf = ZeroShotClassifier(classes=VOCAB, encoder=resnet_encoder, projection="realistic", runtime="torch",
                             precision="fp32")
    assert (clf.config.projection, clf.config.runtime, clf.config.precision) == ("realistic", "torch", "fp32")
    assert clf.engine.projection.name == "realistic" and len(clf.view_weights) == 10
    pred = clf.predict(str(SAMPLES / "chair.ply"))
    assert pred.probs.shape == (1, len(VOCAB)) and abs(pred.probs.sum() - 1) < 1e-9
    assert clf.render(str(SAMPLES / "chair.ply")).shape[:2] == (1, 10)
    with pytest.raises(ConfigError, match="runtime"):
        ZeroShotClassifier(classes=VOCAB, encoder=resnet_encoder, runtime="tpu")
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({c: [f"a depth map of a {c}.", f"a {c} seen from above."] for c in VOCAB}))
    if not hasattr(CLIPEncoder, "sentence_features"):
        with pytest.raises(ConfigError, match="prompt"):
            ZeroShotClassifier(classes=VOCAB, encoder=resnet_encoder, prompts=prompts)
        return
    from pointcalip.prompts import class_features, load_prompt_file

    with_prompts = ZeroShotClassifier(classes=VOCAB, encoder=resnet_encoder, prompts=prompts)
    assert with_prompts.config.prompts == str(prompts)
    want = class_features(resnet_encoder.sentence_features(load_prompt_file(str(prompts), VOCAB)))
    torch.testing.assert_close(with_prompts.text, want)
    with pytest.raises(ConfigError, match="missing"):
        ZeroShotClassifier(classes=[*VOCAB, "sofa"], encoder=resnet_encoder, prompts=prompts)
