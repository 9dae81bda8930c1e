"""The published studies' words come from their numbers: every ``docs/studies/*/summary.md`` is
what ``pclr study report`` generates from its ``summary.csv``, every ``summary.csv`` of a folder
without cells is what its ``results.csv`` gives, and the README quotes each summary block
verbatim between its markers (docs/studies.md, "Summaries")."""

import pathlib
import shutil

import pandas as pd
import pytest

from pclr_jax.study.report import summarize_results_only
from pclr_jax.study.summary_text import summary_blocks, summary_markdown

REPO = pathlib.Path(__file__).resolve().parents[1]
PUBLISHED = sorted(p.parent for p in (REPO / "docs" / "studies").glob("*/summary.md"))


def test_every_published_study_has_a_summary():
    folders = sorted(p.parent for p in (REPO / "docs" / "studies").glob("*/results.csv"))
    assert folders and folders == PUBLISHED


@pytest.mark.parametrize("folder", PUBLISHED, ids=lambda p: p.name)
def test_summary_md_is_generated_from_summary_csv(folder):
    expected = summary_markdown(pd.read_csv(folder / "summary.csv"), folder.name)
    assert (folder / "summary.md").read_text() == expected, (
        f"{folder / 'summary.md'} differs from what its summary.csv generates: run "
        f"`pclr study report {folder.relative_to(REPO)}` instead of editing it"
    )


@pytest.mark.parametrize("folder", PUBLISHED, ids=lambda p: p.name)
def test_summary_csv_of_a_folder_without_cells_is_its_results(folder, tmp_path):
    if (folder / "study.json").exists():
        pytest.skip("a study with its cells: its summary.csv also holds test-set intervals")
    shutil.copy(folder / "results.csv", tmp_path / "results.csv")
    reference = pd.read_csv(folder / "summary.csv")["reference"].iloc[0]
    summarize_results_only(tmp_path, reference)
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "summary.csv"), pd.read_csv(folder / "summary.csv")
    )


@pytest.mark.parametrize("folder", PUBLISHED, ids=lambda p: p.name)
def test_readme_quotes_each_summary_verbatim(folder):
    name = folder.name
    (block,) = summary_blocks((folder / "summary.md").read_text()).values()
    quoted = summary_blocks((REPO / "README.md").read_text())
    assert name in quoted, (
        f"README.md has no summary of the study {name}: copy the block from "
        f"<!-- study-summary:{name} --> to <!-- /study-summary --> of "
        f"docs/studies/{name}/summary.md, markers included, into README.md"
    )
    assert quoted[name] == block, (
        f"README.md's summary of {name} differs from docs/studies/{name}/summary.md: copy the "
        "block between the markers again"
    )
