"""照会 as administrators ask it: the PKI engine's certificate search, filtered by 業務ID."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ca.inquiry import list_certificates
from ca.models import Certificate
from kernel.pagination import Page
from operators.business_systems import system_ids


def find_certificates(session: Session, *, business_id: str | None = None, profile: str | None = None,
                      status: str | None = None, text: str | None = None, page: int = 1,
                      per_page: int = 50) -> Page[Certificate]:
    """Certificates, newest first; an unknown 業務ID finds none."""
    return list_certificates(session, business_system_ids=system_ids(session, business_id), profile=profile,
                             status=status, text=text, page=page, per_page=per_page)
