"""The shipped price catalog, user overrides, and errors that name the file, line and entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertserve.cost import CatalogError, load_catalog, parse_catalog

ENTRY = """
[machines.my-box]
name = "My box"
price_per_hour = 1.25
source = "our invoice"
as_of = "2026-11"
"""


def test_shipped_catalog_has_the_reference_prices() -> None:
    catalog = load_catalog()
    assert catalog.currency == "USD"
    assert catalog["gcp-n1-standard-96"].price_per_hour == 4.56
    assert catalog["gcp-n1-standard-4"].price_per_hour == 0.19
    assert catalog["gcp-nvidia-t4"].price_per_hour == 0.35
    t4 = catalog["gcp-n1-standard-4-t4"]
    assert t4.price_per_hour == pytest.approx(0.54)
    assert t4.parts == ("gcp-n1-standard-4", "gcp-nvidia-t4")


def test_every_shipped_entry_names_source_and_date() -> None:
    catalog = load_catalog()
    assert len(catalog) >= 15
    for machine in catalog.values():
        assert machine.source and machine.as_of and machine.price_per_hour > 0
        assert "http" not in machine.source
        if machine.vcpus is not None:  # a machine, not a part: matched by kind
            assert machine.kind in ("general-purpose", "compute-optimized", "accelerator-optimized")


def test_the_gpus_users_rent_are_priced_on_both_clouds() -> None:
    catalog = load_catalog()
    offered = {(m.provider, m.gpu_model) for m in catalog.values() if m.vcpus and m.gpu_count}
    for gpu in ("T4", "L4", "A100", "H100", "H200"):
        assert ("gcp", gpu) in offered and ("aws", gpu) in offered, gpu
    assert ("aws", "A10G") in offered  # A10G is an AWS part only


def test_accelerator_text_gives_count_and_model() -> None:
    catalog = load_catalog()
    assert (catalog["aws-p5-48xlarge"].gpu_count, catalog["aws-p5-48xlarge"].gpu_model) == (
        8,
        "H100",
    )
    assert catalog["gcp-n1-standard-4-t4"].gpu_model == "T4"
    assert catalog["gcp-n1-standard-2"].gpu_count == 0


def test_share_prices_one_gpu_of_an_eight_gpu_machine() -> None:
    catalog = load_catalog()
    one = catalog["aws-p5en-48xlarge-1gpu"]
    assert one.price_per_hour == pytest.approx(catalog["aws-p5en-48xlarge"].price_per_hour / 8)
    assert (one.share, one.parts, one.gpu_count) == (0.125, ("aws-p5en-48xlarge",), 1)


def test_override_merges_over_the_shipped_catalog(tmp_path: Path) -> None:
    override = tmp_path / "prices.toml"
    override.write_text(
        ENTRY
        + """
[machines.gcp-n1-standard-96]
name = "n1-standard-96 with our discount"
price_per_hour = 3.0
source = "our contract"
as_of = "2026"
""",
        encoding="utf-8",
    )
    catalog = load_catalog(override)
    assert catalog["my-box"].price_per_hour == 1.25
    assert catalog["gcp-n1-standard-96"].price_per_hour == 3.0
    assert catalog["gcp-n1-standard-96"].source == "our contract"
    assert catalog["gcp-n1-standard-4"].price_per_hour == 0.19  # untouched entries stay
    # A changed part changes the machine built from it.
    override.write_text(
        """
[machines.gcp-nvidia-t4]
name = "T4"
price_per_hour = 0.11
source = "spot"
as_of = "2026"
""",
        encoding="utf-8",
    )
    assert load_catalog(override)["gcp-n1-standard-4-t4"].price_per_hour == pytest.approx(0.30)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[machines.x\nname = 1", "invalid TOML"),
        ("\n\n[machines.x]\nname = 'x'\nsource = 's'\nas_of = 'now'\n", "line 3, [machines.x]"),
        ("[machines.x]\nname = 'x'\nprice_per_hour = 1\nas_of = 'now'\n", "needs `source`"),
        (
            "[machines.x]\nname='x'\nsource='s'\nas_of='n'\nprice_per_hour=-2\n",
            "`price_per_hour` must be a number > 0",
        ),
        (
            "[machines.x]\nname='x'\nsource='s'\nas_of='n'\nprice_per_hour='cheap'\n",
            "`price_per_hour` must be a number > 0",
        ),
        (
            "[machines.x]\nname='x'\nsource='s'\nas_of='n'\nprice_per_hour=1\nprise=2\n",
            "unknown key(s) prise",
        ),
        ("[machines.x]\nname='x'\nsource='s'\nas_of='n'\nparts=['nope']\n", "part 'nope'"),
        ("[machines.x]\nname='x'\nsource='s'\nas_of='n'\nparts=['x']\n", "a cycle"),
        ("currency = 'EUR'\n", "bertserve catalogs are USD"),
        (
            "[machines.x]\nname='x'\nsource='s'\nas_of='n'\nprice_per_hour=1\nshare=0.5\n",
            "`share` prices a slice of `parts`",
        ),
        (
            "[machines.y]\nname='y'\nsource='s'\nas_of='n'\nprice_per_hour=8\n"
            "[machines.x]\nname='x'\nsource='s'\nas_of='n'\nparts=['y']\nshare=2\n",
            "`share` must be a number in (0, 1]",
        ),
        ("machine = 1\n", "unknown top-level key(s) machine"),
    ],
)
def test_bad_catalog_names_file_and_entry(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_toml_syntax_error_gives_the_line() -> None:
    with pytest.raises(CatalogError, match=r"mine\.toml: invalid TOML: .*line 7"):
        parse_catalog([("mine.toml", ENTRY + "oops oops\n")])


def test_unknown_machine_lists_known_ids() -> None:
    with pytest.raises(CatalogError, match="no machine 'gcp-n9'.*gcp-n1-standard-4.*--catalog"):
        load_catalog()["gcp-n9"]


def test_missing_override_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="absent.toml: cannot read"):
        load_catalog(tmp_path / "absent.toml")
