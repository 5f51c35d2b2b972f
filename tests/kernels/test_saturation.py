"""A frame's saturation level: first found of --saturation, the header, a measured level, the data type."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

from ccdcal.kernels.saturation import (
    DATA_TYPE,
    MEASURED,
    NO_SATURATION,
    OPTION,
    Saturation,
    data_type_level,
    resolve_saturation,
    saturated,
)

CAMERA = {"BITPIX": 16, "BZERO": 32768.0, "BSCALE": 1.0}  # uint16 stored as int16, as cameras write it


def test_the_option_comes_first() -> None:
    found = resolve_saturation(CAMERA | {"SATURATE": 40000.0}, option=60000.0, measured=50000.0)
    assert found == Saturation(60000.0, OPTION, option=60000.0)
    assert found.external


@pytest.mark.parametrize(
    ("cards", "source", "level"),
    [
        ({"SATURATE": 40000.0, "DATAMAX": 65535, "MAXLIN": 30000.0}, "SATURATE", 40000.0),
        ({"DATAMAX": 65000, "MAXLIN": 30000.0}, "DATAMAX", 65000.0),
        ({"MAXLIN": 30000.0}, "MAXLIN", 30000.0),
        ({"SATURATE": "52000"}, "SATURATE", 52000.0),  # a number written as text
    ],
)
def test_then_the_header_in_keyword_order(cards: dict[str, Any], source: str, level: float) -> None:
    found = resolve_saturation(CAMERA | cards, measured=50000.0)
    assert (found.level, found.source, found.detail, found.external) == (level, source, "", False)


@pytest.mark.parametrize("value", ["unavail", 0.0, -5.0, math.nan, math.inf, True, ""])
def test_a_card_present_but_unusable_is_noted_and_the_next_source_read(value: Any) -> None:
    found = resolve_saturation(CAMERA | {"SATURATE": value, "MAXLIN": 45000.0})
    assert (found.level, found.source) == (45000.0, "MAXLIN")
    assert found.detail == f"SATURATE = {value!r} is not a positive number: not used"
    # SOAR's SATURATE = 'unavail' alone: the data type's level, the card named
    soar = resolve_saturation(CAMERA | {"SATURATE": value})
    assert (soar.level, soar.source) == (65535.0, DATA_TYPE)
    assert soar.detail == f"BITPIX 16, BZERO 32768; SATURATE = {value!r} is not a positive number: not used"


def test_then_a_measured_level_then_the_data_type() -> None:
    assert resolve_saturation(CAMERA, measured=61000.0) == Saturation(61000.0, MEASURED)
    assert resolve_saturation(CAMERA, measured=61000.0).external
    assert resolve_saturation(CAMERA) == Saturation(65535.0, DATA_TYPE, "BITPIX 16, BZERO 32768")


def test_float_data_has_no_level() -> None:
    found = resolve_saturation({"BITPIX": -32, "BZERO": 32768.0})
    assert (found.level, found.source) == (None, "none")
    assert found.detail == "BITPIX -32, BZERO 32768: no data-type maximum"
    assert found.describe() == "none (BITPIX -32, BZERO 32768: no data-type maximum)"
    assert resolve_saturation({}) == Saturation(None, "none", "no BITPIX")
    assert NO_SATURATION.level is None


@pytest.mark.parametrize(
    ("bitpix", "bzero", "bscale", "level"),
    [
        (16, 32768, 1, 65535.0),  # uint16 as int16 with BZERO 32768
        (16, 0, 1, 32767.0),
        (16, None, None, 32767.0),
        (8, 0, 1, 255.0),
        (8, -128, 1, 127.0),  # int8 as uint8 with BZERO -128
        (32, 2147483648, 1, 4294967295.0),  # uint32
        (32, 0, 1, 2147483647.0),
        (16, 32768, 2.0, 98302.0),
        (16, 0, 0.5, 16383.5),
        (-32, 0, 1, None),
        (-64, 0, 1, None),
        (12, 0, 1, None),
        (16, 0, 0.0, None),
        (16, 0, -1.0, None),
        (16, math.nan, 1, None),
    ],
)
def test_data_type_level_after_bzero_and_bscale(
    bitpix: int, bzero: float | None, bscale: float | None, level: float | None
) -> None:
    assert data_type_level(bitpix, bzero, bscale) == level


@pytest.mark.parametrize(
    ("dtype", "bzero", "bscale"),
    [(np.uint16, None, None), (np.int16, None, None), (np.uint8, None, None), (np.int16, 100.0, 0.1)],
)
def test_the_data_type_level_is_the_value_astropy_reads_at_the_top(
    dtype: type, bzero: float | None, bscale: float | None
) -> None:
    """Written and read back by astropy: the largest raw value reads as the data type's level, bit for
    bit (astropy scales BITPIX 8 and 16 in float32)."""
    info = np.iinfo(dtype)
    data = np.array([[info.min, info.max]], dtype=dtype)
    if bscale is None:
        hdu = fits.PrimaryHDU(data)
    else:  # stored values scaled by the header's BSCALE and BZERO
        header = fits.Header([("BSCALE", bscale), ("BZERO", bzero)])
        hdu = fits.PrimaryHDU(data, header, do_not_scale_image_data=True)
    stream = io.BytesIO()
    hdu.writeto(stream)
    stream.seek(0)
    with fits.open(stream) as hdul:
        header = dict(hdul[0].header)
        top = float(np.max(hdul[0].data))
    level = resolve_saturation(header).level
    assert level == top
    assert bool(saturated(np.array([top]), level)[0])


def test_saturated_is_at_or_above_the_level() -> None:
    values = np.array([[65533, 65534], [65535, 70000]], dtype=np.float64)
    np.testing.assert_array_equal(saturated(values, 65534.0), [[False, True], [True, True]])
    np.testing.assert_array_equal(saturated(values, None), np.zeros((2, 2), bool))
    assert not saturated(np.array([np.nan]), 1.0).any()


def test_records_and_words() -> None:
    level = resolve_saturation(CAMERA)
    assert level.as_json() == {
        "level": 65535.0,
        "source": "data type",
        "detail": "BITPIX 16, BZERO 32768",
        "option": None,
    }
    assert level.describe() == "65535 ADU (data type: BITPIX 16, BZERO 32768)"
    assert resolve_saturation(CAMERA, 50000).describe() == "50000 ADU (--saturation)"
