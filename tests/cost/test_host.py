"""Pricing the machine a demo ran on when the user did not name one: same kind, same size,
said as an assumption."""

from __future__ import annotations

import os

import pytest

from bertserve.cost import load_catalog, parse_catalog
from bertserve.cost.host import Host, guess_machine, this_host


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (Host(2), "gcp-n1-standard-2"),  # this project's machines: 2 vCPUs, no GPU
        (Host(4), "gcp-n1-standard-4"),  # the reference's own family comes first
        (Host(96), "gcp-n1-standard-96"),
        (Host(3), "gcp-n1-standard-4"),  # no 3-vCPU entry: the next larger one
        (Host(4, ("Tesla T4",)), "gcp-n1-standard-4-t4"),  # the reference's T4 machine
        (Host(4, ("NVIDIA A10G",)), "aws-g5-xlarge"),
        (Host(16, ("NVIDIA H100 80GB HBM3",)), "aws-p5-48xlarge-1gpu"),  # 24 vCPUs: nearest
        (Host(16, ("NVIDIA H200",)), "aws-p5en-48xlarge-1gpu"),
        (Host(96, ("NVIDIA A100-SXM4-40GB",) * 8), "aws-p4d-24xlarge"),
    ],
)
def test_same_kind_and_size(host: Host, expected: str) -> None:
    guess = guess_machine(load_catalog(), host)
    assert guess.machine is not None and guess.machine.id == expected
    sentence = guess.sentence()
    assert sentence.startswith(f"Assumed: this machine ({host.describe()}) costs what {expected}")
    assert "--machine ID" in sentence


def test_a10g_is_not_an_a100_nor_l4_an_l40s() -> None:
    catalog = load_catalog()
    a10g = guess_machine(catalog, Host(8, ("NVIDIA A10G",))).machine
    assert a10g is not None and a10g.gpu_model == "A10G"
    l40s = guess_machine(catalog, Host(8, ("NVIDIA L40S",)))
    assert l40s.machine is None
    assert l40s.sentence().startswith("No dollars for this machine (8 vCPUs, 1x NVIDIA L40S)")


def test_no_entry_means_no_dollars_and_says_what_to_do() -> None:
    catalog = load_catalog()
    assert guess_machine(catalog, Host(500)).machine is None
    two = guess_machine(catalog, Host(16, ("NVIDIA H100 80GB HBM3",) * 2))
    assert two.machine is None and "no machine with exactly 2x H100" in two.sentence()
    mixed = guess_machine(catalog, Host(16, ("NVIDIA H100 80GB HBM3", "Tesla T4")))
    assert mixed.machine is None


def test_catalog_order_breaks_ties() -> None:
    text = """
[machines.second]
name = "b"
kind = "general-purpose"
vcpus = 2
price_per_hour = 0.05
source = "s"
as_of = "n"
[machines.first]
name = "a"
kind = "general-purpose"
vcpus = 2
price_per_hour = 0.5
source = "s"
as_of = "n"
"""
    catalog = parse_catalog([("mine.toml", text)])
    chosen = guess_machine(catalog, Host(2)).machine
    assert chosen is not None and chosen.id == "second"


def test_this_host_counts_the_cpus_this_process_may_use() -> None:
    host = this_host()
    assert 1 <= host.vcpus <= len(os.sched_getaffinity(0))
