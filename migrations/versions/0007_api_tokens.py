"""API tokens for machine clients (stored as SHA-256 of the secret; scoped, expiring, revocable);
index for a business system's newest certificate

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

import db


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_token',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('display_prefix', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('operator_pk', sa.Integer(), nullable=False),
    sa.Column('scopes', sa.JSON(), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('created_at', db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('revoked_by', sa.String(length=200), nullable=False),
    sa.Column('last_used_at', db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('last_used_from', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['operator_pk'], ['operator.id'], name=op.f('fk_api_token_operator_pk_operator'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_token')),
    sa.UniqueConstraint('token_sha256', name=op.f('uq_api_token_token_sha256'))
    )
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_token_operator_pk'), ['operator_pk'], unique=False)
    op.create_index('ix_certificate_business_system_latest', 'certificate', ['business_system_id', 'profile', 'id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_certificate_business_system_latest', table_name='certificate')
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_token_operator_pk'))

    op.drop_table('api_token')
