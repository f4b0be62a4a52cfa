"""Checks of a run's configuration that a JSON schema cannot make: files that must exist, the demo's outputs."""

from __future__ import annotations

from pathlib import Path


class ConfigError(ValueError):
    """A configuration problem, with a one-line message naming the key and the file."""


def run_names(scenarios: list[str], dispersal: list[str]) -> list[str]:
    """``current_none`` (the present range) then ``{scenario}_{dispersal}`` for every future scenario."""
    return ["current_none"] + [f"{s}_{d}" for s in scenarios for d in dispersal]


def demo_outputs(config: dict, root: str) -> list[str]:
    """The input files the demo rule writes under ``root`` (the rule's folder)."""
    scenarios = config.get("demo", {}).get("scenarios", {})
    return [f"{root}/occurrences.csv", f"{root}/redlist.csv", f"{root}/climate/current.tif",
            *[f"{root}/climate/{name}.tif" for name in scenarios]]


def _paths(config: dict):
    occurrences = config["occurrences"]["path"]
    for p in occurrences if isinstance(occurrences, list) else [occurrences]:
        yield "occurrences.path", p
    if config.get("redlist"):
        yield "redlist.path", config["redlist"]["path"]
    current = config["climate"]["current"]
    for p in current if isinstance(current, list) else [current]:
        yield "climate.current", p
    for name, source in (config["climate"].get("scenarios") or {}).items():
        for p in source if isinstance(source, list) else [source]:
            yield f"climate.scenarios.{name}", p
    threats = config.get("threats") or {}
    if threats.get("protected_areas"):
        yield "threats.protected_areas.path", threats["protected_areas"]["path"]
    for name, entry in (threats.get("pressures") or {}).items():
        yield f"threats.pressures.{name}.path", entry["path"]
    maps = config.get("maps") or {}
    for name in ("regions", "protected_areas"):
        if maps.get(name):
            yield f"maps.{name}.path", maps[name]["path"]


def check_inputs(config: dict, generated: list[str] = ()) -> None:
    """Raise :class:`ConfigError` naming the key and the file of the first input that does not exist.

    ``generated`` lists files that a rule of the run makes (the demo's), which need not exist yet.
    """
    made = {str(Path(p)) for p in generated}
    for key, path in _paths(config):
        if str(Path(path)) in made:
            continue
        if not Path(path).exists():
            raise ConfigError(f"config key {key}: file not found: {path}")
    for key in ("threats", "maps"):
        entry = (config.get(key) or {}).get("protected_areas")
        if entry and str(Path(entry["path"])) not in made:
            check_fraction_raster(f"{key}.protected_areas", entry["path"], entry.get("band"))
    grid = config.get("grid") or {}
    given = [k for k in ("crs", "resolution", "bounds") if grid.get(k) is not None]
    if given and len(given) != 3:
        missing = [k for k in ("crs", "resolution", "bounds") if k not in given]
        raise ConfigError(f"config key grid: give crs, resolution and bounds together (missing {', '.join(missing)})")


FRACTION_CHECK_PX = 1024
"""Longest side of the decimated read (overviews where the file has them) that checks a protected-area raster's
values when the run starts."""


def check_fraction_raster(key: str, path: str | Path, band: str | int | None) -> None:
    """Raise :class:`ConfigError` naming ``key`` when the protected-area raster at ``path`` has no such ``band``,
    or holds values above 1 (a percentage, say) in a decimated read of it (overviews where the file has them):
    caught when the run starts, not after training and prediction. The band is chosen and the values judged as
    when the layer is read (:func:`sdm.threats.band_name`, :func:`sdm.threats.check_fraction`)."""
    import numpy as np
    import rasterio

    from sdm.climate import read_raster
    from sdm.threats import band_name, check_fraction

    try:
        names = [str(v) for v in read_raster(Path(path), lazy=True)["variable"].values]  # the metadata only
        index = names.index(band_name(names, band, path, key)) + 1
        with rasterio.open(path) as src:
            scale = max(1.0, max(src.width, src.height) / FRACTION_CHECK_PX)
            shape = (max(1, round(src.height / scale)), max(1, round(src.width / scale)))
            # in the units the layer is read in (sdm.climate.read_raster: scale and offset applied)
            values = src.read(index, out_shape=shape, masked=True) * src.scales[index - 1] + src.offsets[index - 1]
        check_fraction(float(np.ma.max(values)) if values.count() else 0.0, path, key)
    except ValueError as problem:  # no such band, values not a fraction, or not a raster (naming the file)
        raise ConfigError(f"config key {key}: {problem}" if str(problem).startswith(str(path))
                          else f"config key {problem}") from None
    except rasterio.errors.RasterioError as error:  # a file that opens but cannot be read
        raise ConfigError(f"config key {key}.path: {path}: cannot read the raster ({error})") from None


def validate_config(config: dict, schema_path: str | Path) -> None:
    """Validate against the JSON schema; raise :class:`ConfigError` with one line naming the key at fault."""
    import jsonschema
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        from sdm.ensembles import check_ensembles

        try:
            check_ensembles(config["climate"].get("ensembles"), list(config["climate"].get("scenarios") or {}))
        except ValueError as problem:
            raise ConfigError(f"config key {problem}") from None
        check_one_protected_layer(config)
        return
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        raise ConfigError(f"config key {key}: unknown key(s) {unknown}; allowed: {allowed}")
    raise ConfigError(f"config key {key}: {error.message}")


def check_one_protected_layer(config: dict) -> None:
    """Raise :class:`ConfigError` when ``maps.protected_areas`` and ``threats.protected_areas`` name different
    layers (path or band): the gap map would use one and the species features another."""
    maps = (config.get("maps") or {}).get("protected_areas")
    threats = (config.get("threats") or {}).get("protected_areas")
    if not (maps and threats):
        return

    def layer(entry):  # a band given as 2 or "2" is the same band
        return Path(entry["path"]), None if entry.get("band") is None else str(entry["band"])

    if layer(maps) != layer(threats):
        named = [entry["path"] + ("" if entry.get("band") is None else f" band {entry['band']}")
                 for entry in (maps, threats)]
        raise ConfigError(
            f"config keys maps.protected_areas ({named[0]}) and threats.protected_areas ({named[1]}) name different "
            "rasters; set one of them (either serves the features, the gap map and the protection table)")


def remove_stale_locks(workdir: str | Path = ".") -> list[Path]:
    """Remove Snakemake's directory locks left by a run that was killed (SIGKILL, out of memory, lost node), so
    that the next ``snakemake --cores N`` resumes instead of stopping with "Directory cannot be locked".

    The locks are removed only when no other process whose command line names snakemake runs in ``workdir``
    (Linux ``/proc``; elsewhere nothing is removed): a run that is alive keeps its lock. Returns the removed files.
    """
    import os

    locks = Path(workdir, ".snakemake", "locks")
    files = sorted(locks.glob("*.lock")) if locks.is_dir() else []
    proc = Path("/proc")
    if not files or not proc.is_dir():
        return []
    here, me = Path(workdir).resolve(), os.getpid()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if b"snakemake" in (entry / "cmdline").read_bytes() and Path(os.readlink(entry / "cwd")).resolve() == here:
                return []  # a snakemake process works in this directory: its lock is not stale
        except OSError:  # gone meanwhile, or not ours to inspect
            continue
    for file in files:
        file.unlink(missing_ok=True)
    return files
