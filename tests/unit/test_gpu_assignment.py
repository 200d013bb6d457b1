"""GPU discovery parsing and the assignment rule (S7), as pure functions."""

from __future__ import annotations

import pytest

from ketch._backends.gpu import (
    Gpu,
    assign,
    could_ever_fit,
    discover,
    matches,
    parse_nvidia_smi,
)

SMI = """0, NVIDIA A100-SXM4-80GB, 81920
1, NVIDIA A100-SXM4-80GB, 81920 MiB
2, NVIDIA H100 80GB HBM3, 81559
3, Tesla T4, 15360
garbage line
4, NVIDIA A10G, [N/A]
"""


def test_nvidia_smi_rows_are_parsed_and_bad_ones_skipped() -> None:
    gpus = parse_nvidia_smi(SMI)
    assert [g.index for g in gpus] == [0, 1, 2, 3, 4]
    assert gpus[0] == Gpu(0, "NVIDIA A100-SXM4-80GB", 81920)
    assert gpus[1].memory_mb == 81920
    assert gpus[4] == Gpu(4, "NVIDIA A10G", 0)


@pytest.mark.spec("S7")
def test_type_matching_rule() -> None:
    a100_80 = Gpu(0, "NVIDIA A100-SXM4-80GB", 81920)
    a100_40 = Gpu(1, "NVIDIA A100-PCIE-40GB", 40960)
    h100 = Gpu(2, "NVIDIA H100 80GB HBM3", 81559)
    a10g = Gpu(3, "NVIDIA A10G", 23028)
    assert matches("A100-80GB", a100_80) and not matches("A100-80GB", a100_40)
    assert matches("a100", a100_40)  # case does not matter
    assert matches("H100", h100) and matches("H100!", h100)
    assert not matches("A10", a10g)  # a whole word of the name, not a prefix
    assert matches("A10G", a10g)
    assert all(matches("any", g) for g in (a100_80, h100, a10g))
    # A size given as a token matches the memory when the name does not carry it.
    assert matches("A100-40GB", Gpu(5, "NVIDIA A100", 40536))


@pytest.mark.spec("S7")
def test_assignment_counts_types_lists_and_what_is_in_use() -> None:
    inv = [Gpu(0, "H100"), Gpu(1, "H100"), Gpu(2, "A10G")]
    assert assign("H100:2", inv, set()) == (0, 1)
    assert assign("H100:2", inv, {0}) is None
    assert could_ever_fit("H100:2", inv)
    assert not could_ever_fit("H100:3", inv)
    assert not could_ever_fit("A100", inv)
    assert assign("H100", inv, {0}) == (1,)
    # A list: the first option that can be met now.
    assert assign(["A100", "A10G"], inv, set()) == (2,)
    assert assign(["H100", "A10G"], inv, {0, 1}) == (2,)
    assert assign("any:2", inv, set()) == (0, 1)  # the same model where possible
    assert assign("any", inv, {0, 1, 2}) is None


def test_fake_inventory_is_only_taken_from_its_variable() -> None:
    inv = discover({"KETCH_FAKE_GPUS": "H100, H100,A10G"})
    assert inv.fake and [g.name for g in inv.devices] == ["H100", "H100", "A10G"]
    assert inv.describe() == "H100 x2, A10G x1"
    real = discover({"PATH": "/nonexistent"})
    assert not real.fake and real.devices == ()
