"""The frame-QA rules: each one's numbers, reason and threshold, on groups of frame statistics."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from ccdcal.errors import UsageError
from ccdcal.masters.frameqa import RULE_NAMES, RULES, FrameFacts, QaOptions, failures_text, judge

OPTIONS = QaOptions()


def biases(n: int = 5, **changes: float) -> list[FrameFacts]:
    """``n`` clean biases (level 500 ± 0.3, noise 10), the last one changed."""
    frames = [
        FrameFacts(
            i,
            f"b{i}.fits",
            level=500 + 0.3 * (i % 3 - 1),
            noise=11.0,
            diff_noise=10.0 + 0.05 * i,
            gradient=3.0 + 0.2 * i,
            saturated_fraction=0.0,
            tail_fraction=1e-4,
        )
        for i in range(n)
    ]
    frames[-1] = replace(frames[-1], **changes)
    return frames


def flats(**changes: float) -> list[FrameFacts]:
    frames = [
        FrameFacts(
            i,
            f"f{i}.fits",
            level=21000 + 1000 * i,
            noise=400.0,
            gradient=7000.0,
            saturated_fraction=0.0,
            signal=20000 + 1000 * i,
            signal_noise=80.0,
            ccd_temp=-10.0 + 0.1 * i,
            saturation=65535.0,
        )
        for i in range(5)
    ]
    frames[-1] = replace(frames[-1], **changes)
    return frames


def failed(kind: str, facts: list[FrameFacts], options: QaOptions = OPTIONS) -> dict[int, list[str]]:
    return {i: [f.rule for f in v.failures] for i, v in judge(kind, facts, options).items() if v.set_aside}


def test_clean_groups_keep_every_frame() -> None:
    assert failed("bias", biases()) == {}
    assert failed("dark", biases()) == {}
    assert failed("flat", flats()) == {}


def test_a_level_outlier_is_set_aside_with_its_numbers() -> None:
    verdicts = judge("bias", biases(level=812.0), OPTIONS)
    (failure,) = verdicts[4].failures
    assert failure.rule == "outlier_level"
    assert failure.numbers["level"] == 812.0
    assert failure.numbers["group_level"] == 500.0
    # the group's spread is below a quarter of the noise: the floor, 2.5 ADU, is taken
    assert failure.numbers["group_spread"] == pytest.approx(0.25 * 10.1, rel=1e-3)
    assert failure.reason.startswith("level 812 ADU, group 500 ± 2.525 (")
    assert failure.reason.endswith("σ, limit 10σ)")
    assert failures_text(verdicts[4].failures).endswith("(outlier_level rule)")


def test_a_level_within_the_noise_is_kept() -> None:
    assert failed("bias", biases(level=502.0)) == {}  # 0.2 of the noise
    assert failed("bias", biases(level=530.0)) == {4: ["outlier_level"]}


def test_a_light_leak_is_a_gradient_far_above_the_groups() -> None:
    assert failed("bias", biases(gradient=300.0, diff_noise=60.0)) == {4: ["light_leak", "outlier_noise"]}
    assert failed("dark", biases(gradient=20.0)) == {}  # within 2.5 noise of the group's


def test_noise_above_the_groups_is_an_outlier_but_not_below() -> None:
    assert failed("bias", biases(diff_noise=21.0)) == {4: ["outlier_noise"]}
    assert failed("bias", biases(diff_noise=19.0)) == {}  # below twice the group's
    assert failed("bias", biases(diff_noise=5.0)) == {}


def test_a_bias_with_stars_is_of_the_wrong_type() -> None:
    assert failed("bias", biases(tail_fraction=0.05)) == {4: ["wrong_type"]}
    assert failed("bias", biases(tail_fraction=0.005)) == {}  # below 1 %
    # cosmic rays in every frame of a long dark: no frame stands out
    darks = [replace(f, tail_fraction=0.02) for f in biases()]
    assert failed("dark", darks) == {}


def test_an_unsettled_dark_or_flat_is_off_the_temperature() -> None:
    darks = [replace(f, ccd_temp=-10.0) for f in biases(n=5)]
    darks[2] = replace(darks[2], ccd_temp=-4.0)
    verdicts = judge("dark", darks, OPTIONS)
    (failure,) = verdicts[2].failures
    assert failure.rule == "temperature"
    assert failure.reason == (
        "CCD at -4 °C, +6.0 °C off the group's set point -10 °C (tolerance ±2 °C): the cooler had not settled"
    )
    assert failed("flat", flats(ccd_temp=-7.0)) == {4: ["temperature"]}
    assert failed("bias", [replace(f, ccd_temp=20.0 * f.frame_id) for f in biases()]) == {}  # not judged
    assert failed("dark", darks, QaOptions(temp_tolerance=7)) == {}


def test_a_flat_at_the_bias_level_is_not_a_flat() -> None:
    assert failed("flat", flats(signal=3.0, signal_noise=9.0, level=1629.0)) == {4: ["wrong_type"]}
    assert failed("flat", flats(signal=math.nan, level=1626.0)) == {4: ["wrong_type"]}


def test_a_faint_flat_is_below_the_snr_floor_or_the_groups_signal() -> None:
    assert failed("flat", flats(signal=30.0, signal_noise=9.0)) == {4: ["flat_faint"]}
    assert failed("flat", flats(signal=1500.0, signal_noise=40.0)) == {4: ["flat_faint"]}  # 7 % of the group
    assert failed("flat", flats(signal=1500.0, signal_noise=40.0), QaOptions(flat_min_fraction=0.05)) == {}


def test_a_saturated_or_non_linear_flat_is_too_bright() -> None:
    assert failed("flat", flats(saturated_fraction=0.3)) == {4: ["flat_bright"]}
    assert failed("flat", flats(level=62000.0)) == {4: ["flat_bright"]}
    assert failed("flat", flats(level=62000.0, saturation=math.inf)) == {}  # no level known


def test_small_groups_are_not_judged_on_their_spread() -> None:
    assert failed("bias", biases(n=2, level=900.0)) == {}


def test_every_rule_is_named_once_and_its_threshold_is_an_option() -> None:
    assert RULE_NAMES == (
        "wrong_type",
        "outlier_level",
        "light_leak",
        "outlier_noise",
        "temperature",
        "flat_faint",
        "flat_bright",
    )
    fields = set(QaOptions.__dataclass_fields__)
    assert all(rule.option in fields for rule in RULES)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("outlier_sigma", 0.5, "--qa-outlier-sigma 0.5 is out of range: use 1 <= x <= 1000000 sigma"),
        ("temp_tolerance", 0.0, "--qa-temp-tolerance 0 is out of range: use 0 < x <= 100 °C"),
        ("flat_max_saturated", 1.5, "--qa-flat-max-saturated 1.5 is out of range: use 0 <= x <= 1"),
    ],
)
def test_thresholds_outside_their_range_are_refused(field: str, value: float, message: str) -> None:
    with pytest.raises(UsageError) as refused:
        QaOptions(**{field: value})
    assert str(refused.value) == message
