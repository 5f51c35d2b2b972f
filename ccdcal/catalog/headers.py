"""Header values from the catalog: the cards of a frame's image HDU, read from ``header_cards`` without
opening any file (the optional steps plan from them: sections, gain and read noise keywords)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ccdcal.catalog.models import Frame, HeaderCard
from ccdcal.catalog.queries import usable


def header_values(
    session: Session, keys: Iterable[str], *, frame_ids: Sequence[int] | None = None, kind: str | None = None
) -> dict[int, dict[str, Any]]:
    """Header values of some keywords, per frame, from ``header_cards`` (the frame's image HDU).

    Parameters
    ----------
    session : Session
        An open catalog session.
    keys : iterable of str
        Keywords wanted.
    frame_ids : sequence of int, optional
        These frames ...
    kind : str, optional
        ... or every usable frame of this kind.

    Returns
    -------
    dict
        frame id → {keyword: value}: the number when the card holds one, else its text; the first card of
        a keyword counts.
    """
    query = (
        select(HeaderCard.frame_id, HeaderCard.keyword, HeaderCard.value, HeaderCard.value_num)
        .join(Frame, Frame.id == HeaderCard.frame_id)
        .where(HeaderCard.keyword.in_(sorted(set(keys))), HeaderCard.hdu == func.coalesce(Frame.hdu, 0))
        .order_by(HeaderCard.frame_id, HeaderCard.position)
    )
    if frame_ids is not None:
        query = query.where(HeaderCard.frame_id.in_(list(frame_ids)))
    if kind is not None:
        query = query.where(usable(kind))
    values: dict[int, dict[str, Any]] = {}
    for frame_id, keyword, text, number in session.execute(query):
        cards = values.setdefault(frame_id, {})
        if keyword not in cards:
            cards[keyword] = number if number is not None else text
    return values
