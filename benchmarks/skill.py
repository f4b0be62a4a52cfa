"""Predictive skill against the published anchors (issue 5): one command, all tables.

    python benchmarks/skill.py --results <orchid run results/>   [--only assemblages,futures,iucn,sdm]

The orchid run is `snakemake --cores 2 --configfile config/examples/orchids_global.yaml` (its results/ folder).
Sections:
1. IUCN status from the pipeline's features (benchmarks/skill_iucn.py), next to IUCNN and Estopinan et al.;
2. SDM skill, deep SDM vs elapid MaxEnt on Myrcia, the biomod2 mammals and the orchids (benchmarks/skill_sdm.py);
3. assemblages as sets: per-species threshold vs top-K vs average-K at equal mean set size, on test-block cells;
4. futures: share of threatened species and species with no suitable cell, with and without dispersal, next to
   Estopinan et al.'s shares for the same species.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from sdm.evaluate import estopinan_shares, threat_shares  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def assemblage_table(results: Path) -> pd.DataFrame:
    """Recall of the recorded species in held-out (test-block) cells, per assemblage method, at equal mean set size.

    From ``metrics.json``'s ``test.assemblages``, which the training step computes with its evaluation fit: the
    stored predictions come from the model refitted on every record, test blocks included, so scoring them on the
    test blocks would flatter every method."""
    metrics = json.loads((results / "sdm/metrics.json").read_text())
    held_out = metrics.get("test", {}).get("assemblages")
    if not held_out:
        raise SystemExit(f"{results / 'sdm/metrics.json'} has no test.assemblages (a run of an earlier release): "
                         "rerun the train_sdm step; its stored predictions have seen the test blocks' records")
    table = pd.DataFrame(held_out["methods"])
    return table.assign(cells=held_out["cells"], records=held_out["records"])


def futures_table(results: Path) -> pd.DataFrame:
    """Our threatened shares per scenario x dispersal, and Estopinan et al.'s for the same species."""
    status = pd.read_csv(results / "iucn/status.csv")
    ours = threat_shares(status)
    ours.insert(0, "source", "ours")
    published = pd.read_csv(SHARED / "estopinan_orchid_status/species_status_predictions.csv")
    common = set(status["species"]) & set(published["species"])
    theirs = pd.concat([estopinan_shares(published, common, "present"),
                        estopinan_shares(published, common, "2061_2080")])
    theirs = theirs.assign(source="Estopinan et al. 2024",
                           scenario=theirs["period"].map({"present": "current", "2061_2080": "2061-2080 (their GCMs)"}))
    parts = [ours]
    if common != set(status["species"]):
        parts.append(threat_shares(status[status["species"].isin(common)]).assign(source="ours, same species"))
    return pd.concat([*parts, theirs.drop(columns="period")], ignore_index=True)[
        ["source", "scenario", "dispersal", "species", "threatened_share", "no_suitable_cell"]]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=ROOT / "results", help="results/ of the orchid run")
    parser.add_argument("--only", default="iucn,sdm,assemblages,futures", help="comma-separated sections")
    args = parser.parse_args(argv)
    sections = set(args.only.split(","))
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    if "iucn" in sections:
        print("\n## 1. IUCN status from the pipeline's features (orchids, stratified 10-fold CV)\n")
        try:
            from skill_iucn import iucn_skill_tables
        except ImportError as error:
            print(f"(benchmarks/skill_iucn.py not available: {error})")
        else:
            for name, table in iucn_skill_tables(args.results).items():
                print(f"### {name}\n{table}\n")
    if "sdm" in sections:
        print("\n## 2. SDM skill: deep SDM vs MaxEnt on the same splits\n")
        try:
            from skill_sdm import sdm_skill_tables
        except ImportError as error:
            print(f"(benchmarks/skill_sdm.py not available: {error})")
        else:
            for name, table in sdm_skill_tables().items():
                print(f"### {name}\n{table}\n")
    if "assemblages" in sections:
        print("\n## 3. Assemblages as sets (held-out cells holding records)\n")
        print(assemblage_table(args.results).round(4).to_string(index=False))
    if "futures" in sections:
        print("\n## 4. Futures with full and no dispersal\n")
        print(futures_table(args.results).round(4).to_string(index=False))


if __name__ == "__main__":
    main()
