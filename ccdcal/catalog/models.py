"""The catalog's tables, as SQLAlchemy 2.0 typed models.

The schema itself is created only by the Alembic migrations in ``migrations/``; these models describe it
for queries. Table and column names are fixed by docs/design.md (Catalog). Every column used to group or
match frames and masters is indexed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: ``frames.mtime`` of a frame whose content a worker found changed while its size and mtime were kept
#: (``ccdcal process``): no file has it, so the next ``ccdcal ingest`` reads the file again.
CHANGED_MTIME = -1.0

#: The frame kinds ccdcal knows, as stored in ``frames.imagetyp`` and ``masters.kind``.
FRAME_KINDS = ("bias", "dark", "flat", "light")


def utcnow() -> dt.datetime:
    """The current time in UTC, without tzinfo (every stored time is naive UTC)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    """Declarative base carrying the catalog's MetaData and naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, str: String(255)}


class Run(Base):
    """One invocation of a ccdcal command that changed the catalog."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    command: Mapped[str] = mapped_column(String(32), index=True)
    arguments: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(16), default="running", index=True)
    summary: Mapped[dict[str, Any] | None] = mapped_column()
    ccdcal_version: Mapped[str] = mapped_column(String(32))
    astropy_version: Mapped[str | None] = mapped_column(String(32))
    ccdproc_version: Mapped[str | None] = mapped_column(String(32))
    numpy_version: Mapped[str | None] = mapped_column(String(32))
    python_version: Mapped[str | None] = mapped_column(String(32))
    host: Mapped[str | None] = mapped_column(String(255))
    user: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)


class Frame(Base):
    """One raw FITS file ingested: where it is, what it was when last read, and its normalised keys."""

    __tablename__ = "frames"
    __table_args__ = (
        # The grouping keys of docs/design.md, in the order masters are grouped and lights matched; then what
        # counting the frames of each group reads (revision 0004), so that it reads the index alone.
        Index(
            "ix_frames_group",
            "imagetyp",
            "instrument",
            "xbinning",
            "ybinning",
            "gain",
            "offset",
            "readout_mode",
            "naxis1",
            "naxis2",
            "temp_key",
            "exptime",
            "filter",
            "status",
            "is_bad",
        ),
        # Frames by status, then kind (revision 0005): counted by status and kind from the index alone.
        Index("ix_frames_status", "status", "imagetyp"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))
    changed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    error: Mapped[str | None] = mapped_column(Text)
    hdu: Mapped[int | None] = mapped_column(Integer)
    imagetyp: Mapped[str | None] = mapped_column(String(16), index=True)
    imagetyp_header: Mapped[str | None] = mapped_column(String(80))
    imagetyp_source: Mapped[str | None] = mapped_column(String(8))
    exptime: Mapped[float | None] = mapped_column(Float, index=True)
    ccd_temp: Mapped[float | None] = mapped_column(Float)
    set_temp: Mapped[float | None] = mapped_column(Float)
    temp_key: Mapped[float | None] = mapped_column(Float, index=True)
    xbinning: Mapped[int | None] = mapped_column(Integer)
    ybinning: Mapped[int | None] = mapped_column(Integer)
    gain: Mapped[float | None] = mapped_column(Float)
    offset: Mapped[float | None] = mapped_column(Float)
    filter: Mapped[str | None] = mapped_column(String(80), index=True)
    instrument: Mapped[str | None] = mapped_column(String(80), index=True)
    readout_mode: Mapped[str | None] = mapped_column(String(80))
    naxis1: Mapped[int | None] = mapped_column(Integer)
    naxis2: Mapped[int | None] = mapped_column(Integer)
    bitpix: Mapped[int | None] = mapped_column(Integer)
    date_obs: Mapped[dt.datetime | None] = mapped_column(DateTime, index=True)
    is_bad: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    bad_reason: Mapped[str | None] = mapped_column(Text)
    ingested_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), index=True)


class HeaderCard(Base):
    """One header card of a frame's image HDU, as it is in the file now."""

    __tablename__ = "header_cards"
    # Stored in primary-key order on SQLite (WITHOUT ROWID): a frame's cards are one contiguous range,
    # and a bulk ingest appends instead of maintaining a separate rowid tree.
    __table_args__ = ({"sqlite_with_rowid": False},)

    frame_id: Mapped[int] = mapped_column(ForeignKey("frames.id", ondelete="CASCADE"), primary_key=True)
    hdu: Mapped[int] = mapped_column(Integer, primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    keyword: Mapped[str] = mapped_column(String(72), index=True)
    value: Mapped[str | None] = mapped_column(Text)
    value_num: Mapped[float | None] = mapped_column(Float)
    comment: Mapped[str | None] = mapped_column(Text)


class Master(Base):
    """One master calibration file (bias, dark or flat) and the group it was built for."""

    __tablename__ = "masters"
    __table_args__ = (
        Index(
            "ix_masters_match",
            "kind",
            "instrument",
            "xbinning",
            "ybinning",
            "gain",
            "offset",
            "readout_mode",
            "naxis1",
            "naxis2",
            "status",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), index=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    identity: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    xbinning: Mapped[int | None] = mapped_column(Integer)
    ybinning: Mapped[int | None] = mapped_column(Integer)
    gain: Mapped[float | None] = mapped_column(Float)
    offset: Mapped[float | None] = mapped_column(Float)
    exptime: Mapped[float | None] = mapped_column(Float, index=True)
    temp_key: Mapped[float | None] = mapped_column(Float, index=True)
    filter: Mapped[str | None] = mapped_column(String(80), index=True)
    instrument: Mapped[str | None] = mapped_column(String(80))
    readout_mode: Mapped[str | None] = mapped_column(String(80))
    naxis1: Mapped[int | None] = mapped_column(Integer)
    naxis2: Mapped[int | None] = mapped_column(Integer)
    includes_bias: Mapped[bool] = mapped_column(Boolean, default=False)
    ccd_temp_mean: Mapped[float | None] = mapped_column(Float, index=True)
    date_obs_mean: Mapped[dt.datetime | None] = mapped_column(DateTime, index=True)
    n_inputs: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(32))
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    stat_median: Mapped[float | None] = mapped_column(Float)
    stat_mean: Mapped[float | None] = mapped_column(Float)
    stat_std: Mapped[float | None] = mapped_column(Float)
    rejected_fraction: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default="current", index=True)
    is_bad: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    bad_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), index=True)
    #: Why a newer master replaced this one (an input marked bad, a new calibrator ...); revision 0002.
    superseded_reason: Mapped[str | None] = mapped_column(Text)
    #: The dates of the lights the master may serve (UTC, inclusive, NULL open): ``ccdcal certify`` and
    #: ``decertify`` set them; revision 0007.
    valid_from: Mapped[dt.datetime | None] = mapped_column(DateTime)
    valid_to: Mapped[dt.datetime | None] = mapped_column(DateTime)


class MasterInput(Base):
    """One raw frame combined into a master, with the frame's sha256 as it was used."""

    __tablename__ = "master_inputs"

    master_id: Mapped[int] = mapped_column(ForeignKey("masters.id", ondelete="CASCADE"), primary_key=True)
    frame_id: Mapped[int] = mapped_column(ForeignKey("frames.id"), primary_key=True, index=True)
    sha256: Mapped[str] = mapped_column(String(64))


class MasterCalibrator(Base):
    """One master used to pre-calibrate another master's inputs (bias for darks; bias, dark for flats)."""

    __tablename__ = "master_calibrators"

    master_id: Mapped[int] = mapped_column(ForeignKey("masters.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(8), primary_key=True)
    calibrator_id: Mapped[int] = mapped_column(ForeignKey("masters.id"), index=True)
    scale: Mapped[float | None] = mapped_column(Float)


class Calibration(Base):
    """One calibrated output of one light frame (current, superseded or failed)."""

    __tablename__ = "calibrations"

    id: Mapped[int] = mapped_column(primary_key=True)
    frame_id: Mapped[int] = mapped_column(ForeignKey("frames.id"), index=True)
    raw_sha256: Mapped[str | None] = mapped_column(String(64))
    path: Mapped[str | None] = mapped_column(Text, index=True)
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    dark_scale_factor: Mapped[float | None] = mapped_column(Float)
    flat_norm: Mapped[float | None] = mapped_column(Float)
    steps: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), index=True)
    #: Why a newer calibration replaced this one (what changed in the plan); revision 0002.
    superseded_reason: Mapped[str | None] = mapped_column(Text)


class CalibrationMaster(Base):
    """One master used for one calibration (the provenance row), with the numbers behind the match."""

    __tablename__ = "calibration_masters"

    calibration_id: Mapped[int] = mapped_column(
        ForeignKey("calibrations.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(8), primary_key=True)
    master_id: Mapped[int] = mapped_column(ForeignKey("masters.id"), index=True)
    delta_temp: Mapped[float | None] = mapped_column(Float)
    delta_time: Mapped[float | None] = mapped_column(Float)
    scale: Mapped[float | None] = mapped_column(Float)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)


class Claim(Base):
    """A light being calibrated by a ``ccdcal process`` run, and the output it will write (revision 0003).

    Written with the plan, deleted when the run ends; a claim counts while its run is alive
    (:mod:`ccdcal.lights.claims`).
    """

    __tablename__ = "claims"

    frame_id: Mapped[int] = mapped_column(ForeignKey("frames.id", ondelete="CASCADE"), primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    output: Mapped[str] = mapped_column(Text, unique=True)
    claimed_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)


class CatalogInfo(Base):
    """A fact about the catalog itself (revision 0006): ``catalog_id``, the UUID written to the
    ``.ccdcal-catalog`` marker of every masters and output folder the catalog owns."""

    __tablename__ = "catalog_info"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class StateChange(Base):
    """One change of one column of one catalog row that decides what may be used (revision 0007): a master
    becoming current or superseded, a frame or master marked bad or good, a frame gone missing or back, a
    calibration superseded, a master's validity range set by hand; with when, the values before and after
    (as text: ``true``/``false``, dates as ``YYYY-MM-DD HH:MM:SS.ffffff``) and the run that made it.

    Written in the transaction of the change itself (:mod:`ccdcal.catalog.history`), never updated; the
    catalog as it stood at a time is read from them (``--as-of``).
    """

    __tablename__ = "state_changes"
    __table_args__ = (Index("ix_state_changes_row", "table", "row_id", "column", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    #: ``masters``, ``frames`` or ``calibrations``.
    table_name: Mapped[str] = mapped_column("table", String(32))
    row_id: Mapped[int] = mapped_column(Integer)
    #: ``status``, ``superseded_reason``, ``is_bad``, ``bad_reason``, ``valid_from``, ``valid_to``.
    column_name: Mapped[str] = mapped_column("column", String(32))
    old: Mapped[str | None] = mapped_column(Text)
    new: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), index=True)


class FrameStat(Base):
    """The statistics of one version of one calibration frame's image (revision 0008): measured once per
    file content (its sha256 and image HDU) while the frame is read for a master's combine, and read by
    the frame QA rules (:mod:`ccdcal.masters.frameqa`).

    ``level`` and ``noise`` are the median and ``mad_std`` of the frame's values (as the combine reads
    them: overscan-subtracted when the inputs are), on a regular grid of pixels; ``diff_level`` and
    ``diff_noise`` the same of its difference from the median frame of the group it was combined in;
    ``gradient`` the level's change across the detector (a plane fitted to the medians of 8 x 8 cells);
    ``saturated_fraction`` the share of its pixels at or above its saturation level; ``tail_fraction``
    the share of its difference above ``diff_level + 10 diff_noise`` (stars in a "bias"); ``signal`` a
    flat's level after the bias and dark (what it is divided by) and ``signal_noise`` its pixel-to-pixel
    noise after them (NULL for biases and darks).
    """

    __tablename__ = "frame_stats"
    __table_args__ = (Index("ix_frame_stats_file", "sha256", "hdu", unique=True),)

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    hdu: Mapped[int] = mapped_column(Integer)
    #: The frame measured (another path of the same content shares the row).
    frame_id: Mapped[int] = mapped_column(ForeignKey("frames.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    samples: Mapped[int] = mapped_column(Integer)
    level: Mapped[float | None] = mapped_column(Float)
    noise: Mapped[float | None] = mapped_column(Float)
    diff_level: Mapped[float | None] = mapped_column(Float)
    diff_noise: Mapped[float | None] = mapped_column(Float)
    gradient: Mapped[float | None] = mapped_column(Float)
    saturated_fraction: Mapped[float | None] = mapped_column(Float)
    tail_fraction: Mapped[float | None] = mapped_column(Float)
    signal: Mapped[float | None] = mapped_column(Float)
    signal_noise: Mapped[float | None] = mapped_column(Float)
    measured_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), index=True)


class FrameQa(Base):
    """One frame-QA decision about one version of one calibration frame (revision 0008): set aside by a
    rule (with the rule, its numbers and the reason), or kept again — by the rules (a threshold changed)
    or by a person (``ccdcal mark-good``, which overrides the rules for that file content). Never updated:
    the newest row of a frame and sha256 is its decision."""

    __tablename__ = "frame_qa"
    __table_args__ = (Index("ix_frame_qa_frame", "frame_id", "sha256", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    frame_id: Mapped[int] = mapped_column(ForeignKey("frames.id", ondelete="CASCADE"))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    #: The rule that set the frame aside (or that a person overrode); ``person`` for a person's own.
    rule: Mapped[str] = mapped_column(String(32), index=True)
    #: ``set_aside`` or ``kept``.
    decision: Mapped[str] = mapped_column(String(16), index=True)
    #: ``rule`` or ``person``.
    decided_by: Mapped[str] = mapped_column(String(8))
    numbers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    reason: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), index=True)


class MasterSetAside(Base):
    """One frame of a master's group that the frame QA set aside (revision 0008): not combined, with the
    rule and the reason (also in the master's header)."""

    __tablename__ = "master_set_aside"

    master_id: Mapped[int] = mapped_column(ForeignKey("masters.id", ondelete="CASCADE"), primary_key=True)
    frame_id: Mapped[int] = mapped_column(ForeignKey("frames.id"), primary_key=True, index=True)
    sha256: Mapped[str | None] = mapped_column(String(64))
    rule: Mapped[str] = mapped_column(String(32), index=True)
    reason: Mapped[str] = mapped_column(Text)


#: The ``catalog_info`` key of the catalog's UUID.
CATALOG_ID = "catalog_id"
