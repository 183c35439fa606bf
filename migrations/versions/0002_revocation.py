"""revocation: per-CA revocation state, CRLs, pre-signed OCSP responses

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

import db


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

REASONS = ('unspecified', 'keyCompromise', 'cACompromise', 'affiliationChanged', 'superseded',
           'cessationOfOperation', 'certificateHold', 'privilegeWithdrawn')


def upgrade() -> None:
    op.create_table('revocation_state',
    sa.Column('authority_id', sa.Integer(), nullable=False),
    sa.Column('status_version', sa.Integer(), nullable=False),
    sa.Column('crl_number', sa.Integer(), nullable=False),
    sa.Column('updated_at', db.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['authority_id'], ['certificate_authority.id'],
                            name=op.f('fk_revocation_state_authority_id_certificate_authority')),
    sa.PrimaryKeyConstraint('authority_id', name=op.f('pk_revocation_state'))
    )
    op.create_table('crl',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('authority_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('this_update', db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('next_update', db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('status_version', sa.Integer(), nullable=False),
    sa.Column('entries', sa.Integer(), nullable=False),
    sa.Column('der', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', db.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['authority_id'], ['certificate_authority.id'],
                            name=op.f('fk_crl_authority_id_certificate_authority')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_crl')),
    sa.UniqueConstraint('authority_id', 'number', name='uq_crl_authority_number')
    )
    with op.batch_alter_table('crl', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_crl_authority_id'), ['authority_id'], unique=False)

    op.create_table('ocsp_response',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('certificate_id', sa.Integer(), nullable=False),
    sa.Column('hash_algorithm', sa.String(length=16), nullable=False),
    sa.Column('revoked_at', db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('revocation_reason', sa.Enum(*REASONS, name='revocationreason', native_enum=False, length=40),
              nullable=True),
    sa.Column('responder_id', sa.Integer(), nullable=False),
    sa.Column('this_update', db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('next_update', db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('der', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['certificate_id'], ['certificate.id'],
                            name=op.f('fk_ocsp_response_certificate_id_certificate')),
    sa.ForeignKeyConstraint(['responder_id'], ['certificate.id'],
                            name=op.f('fk_ocsp_response_responder_id_certificate')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ocsp_response')),
    sa.UniqueConstraint('certificate_id', 'hash_algorithm', name='uq_ocsp_response_cert_hash')
    )
    with op.batch_alter_table('certificate', schema=None) as batch_op:
        batch_op.create_index('ix_certificate_authority_revoked', ['authority_id', 'revoked_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('certificate', schema=None) as batch_op:
        batch_op.drop_index('ix_certificate_authority_revoked')
    op.drop_table('ocsp_response')
    with op.batch_alter_table('crl', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_crl_authority_id'))
    op.drop_table('crl')
    op.drop_table('revocation_state')
