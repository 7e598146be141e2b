"""YAML presets shipped with the package (``pointcalip eval --config NAME``)."""
