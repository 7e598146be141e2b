"""Prompt files and the greedy per-class prompt selection (fast vs naive)."""

from __future__ import annotations

import json

import pytest
import torch

from pointcalip.errors import ConfigError
from pointcalip.prompts import DEPTH_TEMPLATES, class_features, load_prompt_file, select_prompts, select_prompts_naive


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def test_prompt_file_matches_classes_and_reports_missing_and_extra(tmp_path) -> None:
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"night_stand": ["a night stand."], "Chair": ["a chair.", "a seat."]}))
    assert load_prompt_file(str(f), ["chair", "night stand"]) == [["a chair.", "a seat."], ["a night stand."]]
    with pytest.raises(ConfigError, match=r"missing 1 class\(es\): lamp; 1 unknown class\(es\): night stand"):
        load_prompt_file(str(f), ["chair", "lamp"])
    f.write_text(json.dumps({"chair": []}))
    with pytest.raises(ConfigError, match="non-empty list"):
        load_prompt_file(str(f), ["chair"])
    f.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid UTF-8 JSON"):
        load_prompt_file(str(f), ["chair"])


def test_class_features_are_renormalised_means() -> None:
    a = _unit(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    out = class_features([a, a[:1]])
    torch.testing.assert_close(out[0], torch.tensor([2 ** -0.5, 2 ** -0.5]))
    torch.testing.assert_close(out[1], torch.tensor([1.0, 0.0]))
    assert all("{}" in t for t in DEPTH_TEMPLATES) and len(set(DEPTH_TEMPLATES)) == len(DEPTH_TEMPLATES)


@pytest.mark.parametrize("seed", range(6))
def test_greedy_selection_matches_naive(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    b, v, d, k = 60, 3, 8, 5
    glob = _unit(torch.randn(b, v, d, generator=g))
    labels = torch.randint(0, k, (b,), generator=g)
    sents = [_unit(torch.randn(int(torch.randint(1, 6, (1,), generator=g)), d, generator=g)) for _ in range(k)]
    weights = [1.0, 0.5, 0.75]
    fast = select_prompts(glob, labels, sents, weights)
    assert fast.chosen == select_prompts_naive(glob, labels, sents, weights)
    assert fast.accuracy_after >= fast.accuracy_before
    # the reported accuracy is that of the selected text features
    x = (glob * torch.tensor(weights).view(1, -1, 1)).sum(1)
    acc = float(((x @ fast.text.t()).argmax(1) == labels).double().mean()) * 100
    assert acc == pytest.approx(fast.accuracy_after, abs=1e-9)


def test_selection_finds_the_separating_sentence() -> None:
    # Class 1's mean feature misclassifies both clouds; its second sentence separates them.
    glob = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    labels = torch.tensor([0, 1])
    sents = [torch.tensor([[0.6, 0.8]]), _unit(torch.tensor([[1.0, 0.05], [0.0, 1.0]]))]
    sel = select_prompts(glob, labels, sents, [1.0])
    assert sel.accuracy_before == 0.0
    assert sel.chosen == (-1, 1)
    assert sel.accuracy_after == 100.0


def test_eval_with_a_prompt_file_and_selection_on_val(tmp_path, tiny_resnet, capsys) -> None:
    from pointcalip.cli import main
    from pointcalip.datasets import class_names
    from pointcalip.testing.datasets import write_modelnet40

    write_modelnet40(tmp_path / "mn", train_per_class=3, test_per_class=1, seed=8)
    classes = class_names("modelnet40")
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({c: [f"a depth map of a {c}.", f"a {c}, seen from the side."] for c in classes}))
    argv = ["eval", "--config", "pointclip_modelnet40", "--data-root", str(tmp_path / "mn"), "--backbone",
            str(tiny_resnet[0]), "--pretrained", str(tiny_resnet[1]), "--device", "cpu", "--runtime", "torch",
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--prompts", str(prompts)]
    assert main(argv + ["--output", str(tmp_path / "avg")]) == 0
    assert main(argv + ["--prompt-select", "val", "--val-fraction", "0.34", "--output", str(tmp_path / "sel")]) == 0
    res = json.loads((tmp_path / "sel" / "results.json").read_text())
    chosen = res["prompts"]["chosen"]
    assert set(chosen) == set(classes)
    assert all(v == "mean of all sentences" or v in (f"a depth map of a {c}.", f"a {c}, seen from the side.")
               for c, v in chosen.items())
    assert res["prompts"]["val_accuracy_after"] >= res["prompts"]["val_accuracy_before"]
    assert res["validation"]["num_samples"] == 40  # one held-out training cloud per class
    # a file that misses a class is one line naming it
    prompts.write_text(json.dumps({c: ["x {}."] for c in classes[1:]}))
    capsys.readouterr()
    assert main(argv + ["--output", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing 1 class(es): airplane" in err
