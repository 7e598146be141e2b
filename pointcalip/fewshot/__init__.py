"""Few-shot 3D classification on frozen CLIP features (docs/method.md §6).

* :mod:`pointcalip.fewshot.heads` — the PointCLIP inter-view adapter and CALIP-FS;
* :mod:`pointcalip.fewshot.config` — :class:`FewShotConfig` (YAML presets ``configs/*_fewshot.yaml``);
* :mod:`pointcalip.fewshot.train` — K-shot sampling, training, resume, test evaluation;
* :mod:`pointcalip.fewshot.evaluate` — ``pointcalip eval --head`` for a saved head.
"""
