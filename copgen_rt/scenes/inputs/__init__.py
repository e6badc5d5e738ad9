"""Scene inputs in every form, one layer, imported only downward:

- `scene_input`: the SceneInput, its errors, band naming, DN offsets (no file format);
- `raster_checks`: what every raster file of an input must be, what its values say;
- the forms, each building one SceneInput: `stacked` (one raster), `per_band` (files per band),
  `safe` (SAFE folder or zip), `stac_item` (a STAC Item); the last three through `multi_file`;
- `open`: `open_input`, which picks the form.
"""
