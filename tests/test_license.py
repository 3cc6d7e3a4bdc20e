"""The repository's licence: the LICENSE file and the package metadata agree."""

from __future__ import annotations

import pytest

from tiny_project import REPO_ROOT


def test_license_file_is_apache_2_with_the_copyright_line():
    text = (REPO_ROOT / "LICENSE").read_text()
    assert text.startswith("Copyright 2026 The ct_pipeline authors\n")
    assert (
        "Apache License\n                           Version 2.0, January 2004" in text
    )
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a stub


def test_package_metadata_names_the_license():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
