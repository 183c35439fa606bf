"""apdl: the module session keeps its login's ID token (id_token_hint of the RP-initiated logout at opauth).

Revision ID: 0006_ux
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0006_ux'
down_revision = '0003_status'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('apdl_operator_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('id_token', sa.Text(), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('apdl_operator_sessions', schema=None) as batch_op:
        batch_op.drop_column('id_token')
