"""apdl: カード障害切り分け history (apdl_diagnoses), per card and terminal within a tenant.

Revision ID: 0004_diag
Revises: 0002
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0004_diag'
down_revision = '0003_iso'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('apdl_diagnoses',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_code', sa.String(length=64), nullable=False),
    sa.Column('card_identifier', sa.String(length=32), nullable=False),
    sa.Column('terminal', sa.String(length=200), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('summary', sa.String(length=64), nullable=False),
    sa.Column('steps', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('apdl_diagnoses', schema=None) as batch_op:
        batch_op.create_index('ix_apdl_diagnoses_tenant_card', ['tenant_code', 'card_identifier', 'id'], unique=False)
        batch_op.create_index('ix_apdl_diagnoses_tenant_terminal', ['tenant_code', 'terminal', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('apdl_diagnoses', schema=None) as batch_op:
        batch_op.drop_index('ix_apdl_diagnoses_tenant_terminal')
        batch_op.drop_index('ix_apdl_diagnoses_tenant_card')
    op.drop_table('apdl_diagnoses')
