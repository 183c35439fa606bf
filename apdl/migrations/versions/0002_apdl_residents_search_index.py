"""apdl: index of the 利用者 list and search, one tenant's rows newest first (tenant_code, id).

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('apdl_residents', schema=None) as batch_op:
        batch_op.create_index('ix_apdl_residents_tenant_code_id', ['tenant_code', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('apdl_residents', schema=None) as batch_op:
        batch_op.drop_index('ix_apdl_residents_tenant_code_id')
