"""apdl: card status feed (カードステータス), its batches, and 即時停止.

Revision ID: 0003_status
Revises: 0002
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0003_status'
down_revision = '0005_agent'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('apdl_card_status',
    sa.Column('card_identifier', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('residence_code', sa.String(length=6), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('batch_id', sa.String(length=64), nullable=False),
    sa.Column('changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('regional_purge', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('card_identifier')
    )
    with op.batch_alter_table('apdl_card_status', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_apdl_card_status_changed_at'), ['changed_at'], unique=False)

    op.create_table('apdl_status_batches',
    sa.Column('batch_id', sa.String(length=64), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.Column('changed', sa.Integer(), nullable=False),
    sa.Column('imported_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('imported_by', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('batch_id')
    )
    with op.batch_alter_table('apdl_status_batches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_apdl_status_batches_imported_at'), ['imported_at'], unique=False)

    op.create_table('apdl_card_stops',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('card_identifier', sa.String(length=32), nullable=False),
    sa.Column('tenant_code', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=False),
    sa.Column('stopped_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('stopped_by', sa.String(length=200), nullable=False),
    sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancelled_by', sa.String(length=200), nullable=False),
    sa.Column('cancel_reason', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('apdl_card_stops', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_apdl_card_stops_card_identifier'), ['card_identifier'], unique=False)
        batch_op.create_index(batch_op.f('ix_apdl_card_stops_tenant_code'), ['tenant_code'], unique=False)
        batch_op.create_index(batch_op.f('ix_apdl_card_stops_stopped_at'), ['stopped_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_apdl_card_stops_cancelled_at'), ['cancelled_at'], unique=False)


def downgrade() -> None:
    op.drop_table('apdl_card_stops')
    op.drop_table('apdl_status_batches')
    op.drop_table('apdl_card_status')
